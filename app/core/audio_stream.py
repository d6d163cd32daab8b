"""AudioStream: one request's encoded audio, made by a worker thread and handed to the event loop.

Chunks reach the loop through a bounded hand-off, so a slow client holds back the engine instead of piling audio
up in memory, and a client that goes away stops the engine at the next chunk.
"""

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.encoders import Encoder
from app.core.engine import SynthesisRequest
from app.core.errors import ClientGone, Invalid

if TYPE_CHECKING:
    from app.core.synthesis import Synthesizer

log = logging.getLogger(__name__)

_READ_AHEAD_CHUNKS = 4


@dataclass
class Stats:
    started: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    audio_seconds: float = 0.0


def close_encoder(encoder: Encoder) -> None:
    try:
        encoder.close()
    except Exception:  # noqa: BLE001 - the stream's outcome is decided; a codec's trailer cannot change it
        log.warning("an encoder failed to close", exc_info=True)


class AudioStream:
    """Encoded audio of one request, produced by a worker thread.

    Iterate ``chunks()``; call ``close()`` on every path (the doors' responses do), which stops the
    worker at its next chunk. The concurrency slot is given back when the worker has really ended.
    """

    def __init__(self, synthesizer: "Synthesizer", request: SynthesisRequest, encoder: Encoder):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._space = threading.Semaphore(_READ_AHEAD_CHUNKS)
        self._cancelled = threading.Event()
        self._engine = synthesizer.engine
        self._slice = synthesizer.engine.sample_rate // 4
        self._stall_timeout = synthesizer.stall_timeout
        self._first: bytes | None = None
        self.samples = 0
        self.ended_early = False  # closed before the end (the client left, or read nothing for too long)
        self.started = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.first_chunk_samples = 0
        # the engine may watch the same event to stop its work early, not only at its next chunk
        request = dataclasses.replace(request, cancelled=self._cancelled)
        self.done = synthesizer.submit(self._work, request, encoder, ended=lambda done: synthesizer.record(self, done))

    # -- worker thread --------------------------------------------------------------------
    def _work(self, request: SynthesisRequest, encoder: Encoder) -> str:
        chunks = self._engine.synthesize(request)
        try:
            for chunk in chunks:
                if self.first_chunk_at is None:
                    self.first_chunk_at = time.perf_counter()
                    self.first_chunk_samples = chunk.size
                self.samples += chunk.size
                # encode long chunks in slices, so the first bytes leave before the whole chunk is encoded
                for start in range(0, chunk.size, self._slice):
                    if not self._hand_over(encoder.encode(chunk[start : start + self._slice])):
                        return self._closed()
            if self._cancelled.is_set():  # the engine stopped early because nobody listens any more
                return self._closed()
            if self.samples == 0:
                raise Invalid("text", "the engine produced no audio for this text (nothing speakable?)")
            self._hand_over(encoder.flush())
            self._deliver(("end", None))
            return "completed"
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._deliver(("error", exc))
            return "failed"
        finally:
            try:
                chunks.close()
            finally:
                close_encoder(encoder)

    def _closed(self) -> str:
        self._deliver(("error", ClientGone(None, "the stream was closed before it ended")))
        return "cancelled"

    def _hand_over(self, data: bytes) -> bool:
        """Pass encoded bytes to the event loop; False when the stream was closed or stalled."""
        if not data:
            return not self._cancelled.is_set()
        waited = 0.0
        while not self._space.acquire(timeout=0.1):
            waited += 0.1
            if waited >= self._stall_timeout:  # the client stopped reading but stays connected
                log.warning("closing a stream whose client read nothing for %.0f s", waited)
                self._cancelled.set()
            if self._cancelled.is_set():
                return False
        self._deliver(("data", data))
        return not self._cancelled.is_set()

    def _deliver(self, item: tuple) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening
            self._cancelled.set()

    # -- event loop -----------------------------------------------------------------------
    async def _next(self) -> bytes | None:
        kind, value = await self._queue.get()
        if kind == "data":
            self._space.release()
            return value
        if kind == "end":
            return None
        raise value

    async def start(self) -> None:
        """Wait for the first encoded bytes, so that early failures surface before any response."""
        try:
            self._first = await self._next()
        except BaseException:
            self.close()
            raise

    async def chunks(self):
        """The encoded audio; it ends early, without an error, if the stream was closed (its client left)."""
        try:
            data = self._first
            while data is not None:
                yield data
                data = await self._next()
        except ClientGone:
            self.ended_early = True
            return
        finally:
            self.close()

    def close(self) -> None:
        self._cancelled.set()

    def watch(self, is_disconnected: Callable[[], Awaitable[bool]]) -> None:
        """Close the stream as soon as the client goes away, even before any byte is sent."""

        async def watch() -> None:
            while not await is_disconnected():
                await asyncio.sleep(0.25)
            self.close()

        watcher = asyncio.create_task(watch())
        self.done.add_done_callback(lambda _: watcher.cancel())

    async def collect(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])
