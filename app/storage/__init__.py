"""Where users' voices and prompts live: a small Storage protocol, local and OSS implementations."""

from app.config import Settings
from app.storage.base import ObjectInfo, ObjectNotFound, Storage, StorageFailure, StorageUnavailable

__all__ = ["ObjectInfo", "ObjectNotFound", "Storage", "StorageFailure", "StorageUnavailable", "open_storage"]


def open_storage(settings: Settings) -> Storage:
    if settings.storage == "oss":
        from app.storage.oss import OssStorage

        return OssStorage(settings)
    from app.storage.local import LocalStorage

    return LocalStorage(settings.storage_dir or settings.data_dir / "storage")
