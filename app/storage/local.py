"""The local-directory Storage (the default)."""

import os
import stat
from pathlib import Path

from app.core.files import atomic_write_bytes
from app.core.storage import ObjectInfo, ObjectNotFound


class LocalStorage:
    name = "local"

    def __init__(self, root: Path):
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:  # callers validate keys; this is the last line of defence
            raise ValueError(f"storage key {key!r} leaves the storage folder")
        return path

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def put(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._path(key), data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()  # is_file is False (not an error) under a file used as a folder

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return ObjectInfo(key, st.st_size, f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}")
