"""A circuit breaker for the storage: after a few failures in a row it fails fast for a while, then lets one call
through to see whether the storage is back (and closes again when it is).

While it is open no call reaches a storage thread, so a hanging bucket cannot hold every thread, and a request
that only touches the storage on its way (a built-in voice looked up in its user's folder first) learns at once
that it is down instead of waiting for the timeouts.
"""

import threading
import time

from app.core.errors import StorageUnavailable

FAILURES = 3  # failures in a row that open the breaker
OPEN_SECONDS = 15.0  # how long it stays open before one call tries again


class Breaker:
    def __init__(self, failures: int | None = None, open_seconds: float | None = None, clock=time.monotonic):
        self.failures = FAILURES if failures is None else failures
        self.open_seconds = OPEN_SECONDS if open_seconds is None else open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failed = 0  # failures in a row
        self._open_until = 0.0
        self._probing = False  # one call is finding out whether the storage is back
        self._problem = ""

    def before(self) -> None:
        """Raise ``StorageUnavailable`` while the breaker is open; else the call may go ahead."""
        with self._lock:
            if self._failed < self.failures:
                return
            if self._clock() >= self._open_until and not self._probing:
                self._probing = True  # half-open: this call tries
                return
            wait = max(1, round(self._open_until - self._clock()))
        raise StorageUnavailable("storage", f"{self._problem}; not tried again for about {wait} s")

    def succeeded(self) -> None:
        with self._lock:
            self._failed, self._probing = 0, False

    def report(self, outcome: str | None) -> None:
        """How a call ended: "" the storage answered, a problem when it failed, None when nobody knows."""
        if outcome == "":
            self.succeeded()
        elif outcome is None:
            self.released()
        else:
            self.failed(outcome)

    def released(self) -> None:
        """The call ended without telling whether the storage works (it was cancelled, or a bug): another may try."""
        with self._lock:
            self._probing = False

    def failed(self, problem: str) -> None:
        with self._lock:
            self._failed += 1
            self._probing = False
            self._problem = problem
            if self._failed >= self.failures:
                self._open_until = self._clock() + self.open_seconds

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._failed >= self.failures
