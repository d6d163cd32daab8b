"""Crash-safe local files: a write leaves the old content or the new, never a part."""

import errno
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
# what a file system that does not fsync directories answers (anything else is logged as an error)
_NO_DIRECTORY_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES}


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Temp file in the same folder, fsync, os.replace, fsync the folder: old or new, never half.

    The rename is the commit: once it is done the new content is what readers see, so a folder that cannot be
    synced after it (some file systems refuse fsync on a directory: EINVAL) is logged, not raised as a failed
    write (a caller that undid its staging would then lose a committed save); EIO and the like are logged as errors.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        level = logging.WARNING if exc.errno in _NO_DIRECTORY_SYNC else logging.ERROR  # EIO: a failing disk
        log.log(level, "%s was written, but its folder could not be synced to disk: %s", path, exc)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))
