"""The local-directory Storage (the default)."""

import logging
import os
import stat
from pathlib import Path

from app.core.files import atomic_write_bytes, interrupted_write
from app.core.storage import ObjectInfo, ObjectNotFound, StorageUnavailable

log = logging.getLogger(__name__)


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
        try:
            atomic_write_bytes(self._path(key), data)  # a failed write leaves the old object as it was
        except OSError as exc:  # a full disk (ENOSPC), a quota, a read-only folder: the same 503 as OSS's outage
            raise StorageUnavailable("storage", f"the storage folder cannot be written now ({_reason(exc)})") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()  # is_file is False (not an error) under a file used as a folder

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable("storage", f"the storage folder cannot be changed now ({_reason(exc)})") from None

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
        return ObjectInfo(key, st.st_size, f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}", st.st_mtime)

    def sweep(self) -> int:
        """Remove the temp files of writes a crash interrupted (at start-up); how many."""
        removed = 0
        for path in self.root.rglob(".*.tmp"):
            if path.is_file() and interrupted_write(path):
                log.warning("removing an interrupted write: %s", path)
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # a read-only mount: served as it is
                    log.warning("could not remove %s: %s", path, exc.strerror)
                    continue
                removed += 1
        return removed


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__  # never the path: it is the server's, not the client's
