"""The Storage protocol and its errors. Keys are '/'-separated and validated by callers (app.core.names)."""

from dataclasses import dataclass
from typing import Protocol

from app.core.errors import StorageFailure, StorageUnavailable  # noqa: F401 - the storage errors


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # changes whenever the content changes
    modified: float = 0.0  # when it was last written (Unix time)


class ObjectNotFound(KeyError):
    """No object under that key (callers turn it into a 404 naming their field)."""


class Storage(Protocol):
    """Blocking calls: the service runs them in worker threads."""

    name: str

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` whole: readers see the old object or the new one, never a part."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursively), sorted."""

    def stat(self, key: str) -> ObjectInfo: ...
