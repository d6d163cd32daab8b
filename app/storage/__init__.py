"""Where users' voices and prompts live: local and OSS implementations of the core's Storage protocol."""

from app.config import Settings
from app.core.storage import Storage


def open_storage(settings: Settings) -> Storage:
    if settings.storage == "oss":
        from app.storage.oss import OssStorage

        return OssStorage(settings)
    from app.storage.local import LocalStorage

    return LocalStorage(settings.storage_dir or settings.data_dir / "storage")
