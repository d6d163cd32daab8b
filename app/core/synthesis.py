"""Synthesizer: runs engine work in worker threads behind a concurrency limit and streams it (``AudioStream``).

One path for every endpoint: a ``SynthesisRequest`` and an ``Encoder`` go in, an async iterator of
encoded bytes comes out. The engine generator and the encoder both run in a worker thread; chunks
reach the event loop through a bounded hand-off, so a slow client holds back the engine instead of
piling audio up in memory, and a client that goes away stops the engine at the next chunk.
"""

import asyncio
import collections
import contextlib
import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from app.core.audio_stream import AudioStream, Stats, close_encoder
from app.core.encoders import Encoder
from app.core.engine import SpeechEngine, SynthesisRequest
from app.core.errors import Busy
from app.core.observer import Observer, StreamRecord, Unobserved

log = logging.getLogger(__name__)


def _yield_to_the_loop() -> None:
    """An engine thread runs at a lower CPU priority (nice +10; threads it starts inherit it) than the event loop,
    so on a loaded machine the loop (probes, new requests, the audio hand-off) does not queue behind synthesis:
    /health p99 at 4x the slots went from 24 to 16 ms, with the same synthesis throughput (make load-test)."""
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS with a thread's id names a process
        return
    with contextlib.suppress(Exception):  # an error here would break the pool: the thread then runs as it is
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + 10))


class Synthesizer:
    """Engine work behind ``max_concurrency`` slots, with at most ``max_queued`` requests waiting for one.

    A request that would wait beyond ``queue_timeout`` (by the measured drain rate) or find the queue full is
    refused at once with ``Busy`` and a ``retry_after``, so load never piles up unbounded in memory."""

    def __init__(
        self,
        engine: SpeechEngine,
        max_concurrency: int,
        queue_timeout: float,
        stall_timeout: float = 60.0,
        max_queued: int = 16,
        observer: Observer | None = None,
    ):
        self.engine = engine
        self.stall_timeout = stall_timeout
        self.observer = observer or Unobserved()
        self._open: set[AudioStream] = set()
        self.max_concurrency = max_concurrency
        self.max_queued = max_queued
        self.executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="engine", initializer=_yield_to_the_loop)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._queue_timeout = queue_timeout
        self.active = 0
        self.waiting = 0
        self.hold_seconds: float | None = None  # a slot's mean holding time (moving average), for the drain rate
        self.stats = Stats()
        self.recent: collections.deque[StreamRecord] = collections.deque(maxlen=100)

    def expected_wait(self, position: int) -> float | None:
        """Seconds until the ``position``-th waiter gets a slot, from the drain rate; None before any was measured."""
        if self.hold_seconds is None:
            return None
        return position * self.hold_seconds / self.max_concurrency

    def _busy(self, reason: str, problem: str, position: int) -> Busy:
        self.observer.rejected(reason)
        expected = self.expected_wait(position)
        retry_after = max(1, math.ceil(expected if expected is not None else 1))
        return Busy(None, f"{problem}; retry in {retry_after} s", retry_after, reason)

    async def acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot (and nobody waiting): taken without suspending
            self.active += 1
            return
        position = self.waiting + 1
        if self.waiting >= self.max_queued:
            full = f"all {self.max_concurrency} synthesis slots are busy and {self.waiting} requests wait"
            raise self._busy("queue_full", full, position)
        expected = self.expected_wait(position)
        if expected is not None and expected > self._queue_timeout:
            long = f"a synthesis slot would take about {expected:.0f} s to free up"
            raise self._busy("wait_too_long", long, position)
        self.waiting += 1
        try:
            async with asyncio.timeout(self._queue_timeout):  # (wait_for could swallow a cancellation)
                await self._slots.acquire()
        except TimeoutError:
            problem = f"all {self.max_concurrency} synthesis slots stayed busy for {self._queue_timeout:g} s"
            raise self._busy("timeout", problem, 1) from None
        finally:
            self.waiting -= 1
        self.active += 1

    def submit(self, fn: Callable, *args, ended: Callable[[asyncio.Future], None] | None = None) -> asyncio.Future:
        """Run ``fn`` in an engine thread; when it ends, ``ended`` is called, then the slot taken by ``acquire`` is
        freed (so a free slot means its work is fully accounted for)."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        future.add_done_callback(functools.partial(self._release, time.monotonic(), ended))
        return future

    def _release(self, started: float, ended, future) -> None:
        try:
            if ended is not None:
                ended(future)
        finally:
            self._free(time.monotonic() - started)

    def _free(self, held: float) -> None:
        self.hold_seconds = held if self.hold_seconds is None else 0.8 * self.hold_seconds + 0.2 * held
        self.active -= 1
        self._slots.release()

    async def run(self, fn: Callable, *args):
        """Run one piece of engine work (e.g. making a voice) within the concurrency limit."""
        await self.acquire()
        # shielded: if the caller is cancelled, the slot stays taken until the thread really ends
        return await asyncio.shield(self.submit(fn, *args))

    async def stream(
        self, request: SynthesisRequest, encoder: Encoder, is_disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> AudioStream:
        """Start synthesis and wait for the first encoded bytes (a whole WAV's come at the end)."""
        stream = await self.open(request, encoder, is_disconnected)
        await stream.start()
        return stream

    async def open(
        self, request: SynthesisRequest, encoder: Encoder, is_disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> AudioStream:
        """Start synthesis (its worker owns ``encoder`` until ``done``); ``start()`` waits for the first bytes."""
        try:
            await self.acquire()
        except BaseException:
            close_encoder(encoder)
            raise
        stream = AudioStream(self, request, encoder)
        self.stats.started += 1
        self._open.add(stream)
        if is_disconnected is not None:
            stream.watch(is_disconnected)
        return stream

    def record(self, stream: AudioStream, future: asyncio.Future) -> None:
        """What a finished stream did: counted, kept in ``recent``, told to the observer."""
        self._open.discard(stream)
        outcome = "failed" if future.cancelled() or future.exception() else future.result()
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        audio_seconds = stream.samples / self.engine.sample_rate
        self.stats.audio_seconds += audio_seconds
        latency = None if stream.first_chunk_at is None else stream.first_chunk_at - stream.started
        seconds = time.perf_counter() - stream.started
        record = StreamRecord(outcome, latency, stream.first_chunk_samples, stream.samples, seconds, audio_seconds)
        self.recent.append(record)
        self.observer.stream_ended(record)

    def shutdown(self) -> None:
        for stream in list(self._open):
            stream.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
