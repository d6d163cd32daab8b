"""Crash-safe local files: a write leaves the old content or the new, never a part."""

import errno
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
# who writes a temp file (this host and process), in its name: a sweep can tell an interrupted write from one that
# another process is making right now
WRITER = f"{socket.gethostname()}-{os.getpid()}"
_TEMP = re.compile(r"\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp")
# what a file system that does not fsync directories answers (anything else is logged as an error)
_NO_DIRECTORY_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES}


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Temp file in the same folder, fsync, os.replace, fsync the folder: old or new, never half.

    The rename is the commit: once it is done the new content is what readers see, so a folder that cannot be
    synced after it (some file systems refuse fsync on a directory: EINVAL) is logged, not raised as a failed
    write (a caller that undid its staging would then lose a committed save); EIO and the like are logged as errors.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{WRITER}.", suffix=".tmp")
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


def interrupted_write(path: Path, max_age: float = 3600.0) -> bool:
    """Whether ``path`` is the temp file of a write that will never finish: its writer, a process of this host, is
    gone; or it is a temp file older than ``max_age`` (a writer on another host, or from before writers were named).
    """
    if not path.name.startswith(".") or not path.name.endswith(".tmp"):
        return False
    tagged = _TEMP.fullmatch(path.name)
    if tagged and tagged["host"] == socket.gethostname() and int(tagged["pid"]) != os.getpid():
        try:
            os.kill(int(tagged["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        else:
            return False
    try:
        return time.time() - path.stat().st_mtime > max_age
    except FileNotFoundError:
        return False
