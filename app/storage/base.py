"""The Storage protocol and its errors. Keys are '/'-separated and validated by callers (app.names)."""

from dataclasses import dataclass
from typing import Protocol

from app.errors import ServiceError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # changes whenever the content changes


class ObjectNotFound(KeyError):
    """No object under that key (callers turn it into a 404 naming their field)."""


class StorageError(ServiceError):
    """The storage answered, but not with what we asked for (e.g. refused credentials)."""

    status = 502
    code = "storage_error"


class StorageUnavailable(ServiceError):
    """The storage did not answer in time, or kept failing (5xx) after the retries."""

    status = 503
    code = "storage_unavailable"


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
