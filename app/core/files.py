"""Crash-safe local files: a write leaves the old content or the new, never a part."""

import errno
import logging
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
# who writes a temp file, in its name: this host, process, and a nonce of this process (a container's pid repeats
# across restarts), so that a sweep can tell an interrupted write from one another process is making
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
WRITER = f"{_HOST}-{os.getpid()}-{secrets.token_hex(3)}"
_TEMP = re.compile(r"\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-(?P<nonce>[0-9a-f]{6})\.[^.]+\.tmp")
DEAD_WRITER_SECONDS = 60.0  # a write whose process seems gone is swept only this old: a host name may be shared
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
    """Whether ``path`` is the temp file of a write that will never finish: a minute old and its writer, a process
    of this host, gone (or this very process before a restart, by its nonce); or any temp file ``max_age`` old."""
    if not path.name.startswith(".") or not path.name.endswith(".tmp"):
        return False
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    tagged = _TEMP.fullmatch(path.name)
    if age < DEAD_WRITER_SECONDS or tagged is None or tagged["host"] != _HOST:
        return age > max_age
    if f"{tagged['host']}-{tagged['pid']}-{tagged['nonce']}" == WRITER:
        return False  # this process is writing it
    if int(tagged["pid"]) == os.getpid():
        return True  # the same pid, another nonce: an earlier process with this pid (a container restarted)
    try:
        os.kill(int(tagged["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive, another user's; or no pid of ours
        return False
    return False
