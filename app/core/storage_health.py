"""What /ready says of the storage: whether it answers, and, after a save failed, whether saves work again.

Probes run one at a time in a thread of their own, so a hanging bucket never holds the threads requests need,
however often readiness is asked.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.core.errors import StorageFailure, StorageUnavailable
from app.core.files import atomic_write_bytes
from app.core.observer import Observer
from app.core.storage import Storage

_READINESS_KEY = "ready-probe"  # an object that need not exist: asking for it shows the storage answers
_WRITE_PROBE = ".ready-probe"  # written and removed while saves fail; no user's name can start with a dot
_PROBE_BYTES = 1024 * 1024  # room for a voice and its source: a few bytes fit on a disk too full for a save


class StorageHealth:
    def __init__(self, storage: Storage, library_dir: Path, observer: Observer):
        self._storage, self._library_dir, self._observer = storage, library_dir, observer
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="storage-probe")
        self._probe: asyncio.Future | None = None
        self._save_failed: tuple[str, bool] | None = None  # why the last save failed, and whether in the library

    def save_failed(self, problem: str, in_library: bool) -> None:
        self._save_failed = (problem, in_library)

    def save_succeeded(self) -> None:
        self._save_failed = None

    async def storage_problem(self, timeout: float) -> str | None:
        """None when the storage answers within ``timeout`` (asked for an object that need not exist), else why."""
        if self._probe is None or self._probe.done():
            run = asyncio.get_running_loop().run_in_executor
            self._probe = run(self._thread, self._storage.exists, _READINESS_KEY)
            self._probe.add_done_callback(self._probe_ended)
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except (StorageFailure, StorageUnavailable) as exc:
            return exc.problem
        return None

    async def saves_problem(self, timeout: float) -> str | None:
        """None unless the last save failed (a full disk, a refused write); then a 1 MiB write where it failed
        tells whether saves work again, so a replica taken out of service by it comes back by itself."""
        if self._save_failed is None:
            return None
        problem, in_library = self._save_failed
        write = self._library_write if in_library else self._storage_write
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._thread, write), timeout)
        except (OSError, TimeoutError, StorageFailure, StorageUnavailable):
            return f"saving voices fails: {problem}"
        self._save_failed = None
        return None

    def _storage_write(self) -> None:
        self._storage.put(_WRITE_PROBE, bytes(_PROBE_BYTES))
        self._storage.delete(_WRITE_PROBE)

    def _library_write(self) -> None:
        probe = self._library_dir / _WRITE_PROBE
        atomic_write_bytes(probe, bytes(_PROBE_BYTES))
        probe.unlink()

    def _probe_ended(self, probe: asyncio.Future) -> None:
        """Each probe's failure counted once, and retrieved even when every caller stopped waiting for it."""
        error = None if probe.cancelled() else probe.exception()
        if isinstance(error, StorageFailure | StorageUnavailable):
            self._observer.storage_failed(error)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
