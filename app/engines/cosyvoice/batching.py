"""Batching across requests: the LLM stage's continuous batching (``Scheduler``), token-to-wave's (``Gatherer``).

The LLM stage: one thread steps every active request's decode in one forward.

A decode step of the 0.5 B LLM reads all its weights to make one token; for several requests at once it
reads them once (``SpeechLM.decode``), so a step for four costs little more than a step for one. Requests
join and leave between steps:

- a new request's prompt runs (prefill) between decode steps: whole when nothing else is decoding, else in
  pieces of ``prefill_piece`` positions, one piece per step, so the streams already running wait at most one
  piece for it (its cost is in the metrics: ``cosyvoice_llm_step_seconds{kind="prefill"}``);
- a request leaves at the first step after its consumer stops it (a client that left, a failed vocoder):
  its tokens stop, its keys and values are dropped, its TokenStream is closed;
- each request keeps its own keys and values, position, sampling window, length limits and generator, so
  its tokens do not depend on what it is batched with (to floating-point rounding of batched products).

The thread runs while there is work and ends when there is none. Capacity is ``max_batch`` (the service's
``COSYVOICE_MAX_CONCURRENCY``: its engine slots are what submits here, so no request waits here for a slot).
Prompts run one at a time, though: of a burst of requests arriving together the last starts decoding after
the others' prompts have run, piece by piece (the first audio of a burst, measured in ``make bench-model``).

Token to wave: the streams' token-to-wave stages run in their own threads and hand each flow chunk's ODE
solve (ten estimator passes, the stage's bulk) and each vocoder chunk to a ``Gatherer``, which runs those
that arrive within a few milliseconds of each other as one pass: flow chunks packed along the frame axis
(``flow.Chunk``, ``caches.Rows``), vocoder chunks of the same length stacked (``vocoder.vocode``). A stream's
first chunk is not gathered: it runs at once, alone (``Gatherer.alone``), so a new stream's first audio never
waits for other streams' work.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import torch

from app.engines.cosyvoice.llm import MAX_SILENT, Decoding, LMInput, SpeechLM, TokenStream

log = logging.getLogger(__name__)

PREFILL_PIECE = 64  # prompt positions run per step while others decode (a cloned voice's prompt: ~150-300)

# ("decode", batch, seconds), ("prefill", positions, seconds), ("flow" or "vocoder", streams, seconds)
StepObserver = Callable[[str, int, float], None]


def unobserved(kind: str, size: int, seconds: float) -> None:
    pass


class Scheduler:
    """One per loaded model: the LLM stage of every request, stepped together."""

    def __init__(
        self,
        lm: SpeechLM,
        max_batch: int,
        prefill_piece: int = PREFILL_PIECE,
        observe: StepObserver = unobserved,
        name: str = "cosyvoice-llm",
    ):
        if not lm.own_loop:
            raise ValueError("upstream's own LLM loop (vLLM, the fr-infer wheel) cannot be batched here")
        self.lm, self.max_batch, self.prefill_piece = lm, max_batch, prefill_piece
        self.observe, self.name = observe, name
        self._waiting: deque[Decoding] = deque()
        self._active: list[Decoding] = []
        self._prefilling: Decoding | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, request: LMInput, generator: torch.Generator, out: TokenStream, stop: Callable[[], bool]) -> None:
        """Decode ``request`` into ``out`` from the next step on, until it ends or ``stop()`` is true."""
        with self._changed:
            self._waiting.append(Decoding(request, generator, out, stop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    @property
    def batch(self) -> int:
        """Requests decoding now (the last step's batch)."""
        return len(self._active)

    def _run(self) -> None:
        try:
            with self.lm.context():
                while self._admit():
                    self._step()
        except BaseException as exc:  # noqa: BLE001 - a bug here must not leave consumers waiting forever
            log.error("the LLM scheduler failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            with self._changed:
                if self._thread is not threading.current_thread():
                    return  # it had ended: what there is now belongs to a newer thread
                everyone = [*self._active, *self._waiting, *([self._prefilling] if self._prefilling else [])]
                self._active, self._prefilling, self._thread = [], None, None
                self._waiting.clear()
            for decoding in everyone:
                decoding.out.finish(exc)

    def _admit(self) -> bool:
        """Drop stopped requests, take the next one to prefill; False (the thread ends) when there is no work."""
        for decoding in [*self._active, *([self._prefilling] if self._prefilling else [])]:
            if decoding.stop():
                self._finish(decoding)
        with self._changed:
            for decoding in [d for d in self._waiting if d.stop()]:  # a client that left while queued
                self._waiting.remove(decoding)
                decoding.out.finish()
            room = len(self._active) + (self._prefilling is not None) < self.max_batch
            if self._prefilling is None and self._waiting and room:
                self._prefilling = self._waiting.popleft()
            if not self._active and self._prefilling is None:
                self._thread = None
                return False
        return True

    def _step(self) -> None:
        decoding = self._prefilling
        if decoding is not None:
            most = self.prefill_piece if self._active else 1 << 30  # whole when nobody waits for it
            try:
                started, before = time.perf_counter(), decoding.length
                hidden = self.lm.prefill(decoding, most)
                if hidden is not None:
                    self._prefilling = None
                    self._active.append(decoding)
                    self._emit([decoding], hidden)
                # on CUDA a piece that ends no prompt is timed to its launch: waiting would stall the next step
                self.observe("prefill", decoding.length - before, time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - this request's failure (its prompt), not the others'
                self._fail([decoding], exc)
        batch = [d for d in self._active if d is not decoding]  # it has its token for this step
        if not batch:
            return
        try:
            started = time.perf_counter()
            self._emit(batch, self.lm.decode(batch))  # sampling reads the scores: the step's work is done
            self.observe("decode", len(batch), time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - the step failed for everyone in it
            self._fail(batch, exc)

    def _emit(self, batch: list[Decoding], hidden: torch.Tensor) -> None:
        scores = self.lm.log_probs(hidden)
        for row, decoding in enumerate(batch):
            if decoding.exhausted:  # upstream's maximum length, 0 for an empty text: no token at all
                self._finish(decoding)
                continue
            try:
                token = self.lm.choose(decoding, scores[row])
            except Exception as exc:  # noqa: BLE001 - this row's sampling (its scores), not the others'
                self._fail([decoding], exc)
                continue
            if token is not None:
                decoding.silent_run = decoding.silent_run + 1 if token in self.lm.silent else 0
                if decoding.silent_run <= MAX_SILENT:  # upstream's llm_job drops longer silent runs
                    decoding.out.put(token)
            if token is None or decoding.exhausted:
                self._finish(decoding)

    def _fail(self, batch: list[Decoding], exc: Exception) -> None:
        log.error("the LLM stage failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        for decoding in batch:
            self._finish(decoding, exc)

    def _finish(self, decoding: Decoding, error: BaseException | None = None) -> None:
        if decoding is self._prefilling:
            self._prefilling = None
        elif decoding in self._active:
            self._active.remove(decoding)
        decoding.layers, decoding.prefill_cache = [], None  # its keys and values go now, not with the stream
        decoding.out.finish(error)


class Gatherer:
    """Runs the jobs that several streams hand in at about the same time as one batch (``run``: jobs to results,
    in order, an exception in place of a job's result failing that job alone), for the token-to-wave stage's
    flow and vocoder chunks.

    No thread of its own: a stream that hands in a job when no batch is running leads the next one. The leader
    waits at most ``wait`` seconds for others, and not at all once every stream that could send one has (the
    streams in the stage, ``joined``), so a stream alone, or the last to arrive, never waits for a batch.
    """

    def __init__(self, run: Callable[[list], list], max_batch: int, wait: float, observe: StepObserver, kind: str):
        self.run, self.max_batch, self.wait = run, max_batch, wait
        self.observe, self.kind = observe, kind
        self.members = 0  # streams in the stage now
        self._pending: deque[tuple[object, Future]] = deque()
        self._leading = False
        self._changed = threading.Condition()

    @contextmanager
    def joined(self) -> Iterator[None]:
        """A stream in the stage: the leader of a batch may wait for its job."""
        with self._changed:
            self.members += 1
        try:
            yield
        finally:
            with self._changed:
                self.members -= 1
                self._changed.notify_all()

    def alone(self, job):
        """Run ``job`` now, in this thread, by itself (a stream's first chunk: never held for a batch)."""
        started = time.perf_counter()
        (result,) = self.run([job])
        if isinstance(result, BaseException):
            raise result
        self.observe(self.kind, 1, time.perf_counter() - started)
        return result

    def __call__(self, job):
        mine: Future = Future()
        with self._changed:
            self._pending.append((job, mine))
            self._changed.notify_all()
        while not mine.done():
            with self._changed:
                if self._leading:
                    self._changed.wait_for(lambda: mine.done() or not self._leading)
                    continue
                self._leading = True
            try:
                self._lead()
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        return mine.result()

    def _lead(self) -> None:
        deadline = time.monotonic() + self.wait
        with self._changed:
            wanted = lambda: len(self._pending) >= min(self.max_batch, max(1, self.members))  # noqa: E731
            self._changed.wait_for(wanted, timeout=max(0.0, deadline - time.monotonic()))
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
        if not batch:
            return
        started = time.perf_counter()
        try:
            results = self.run([job for job, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} jobs")
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):  # that job's own failure (the others' went on)
                    future.set_exception(self._failure(result))
                else:
                    future.set_result(result)
        except Exception as exc:  # noqa: BLE001 - every stream in the pass gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._failure(exc))
            return
        finally:  # whatever happened above (even a BaseException), no stream is left waiting
            for _, future in batch:
                if not future.done():
                    future.set_exception(PassFailed(f"the {self.kind} pass was interrupted"))
        self.observe(self.kind, len(batch), time.perf_counter() - started)

    def _failure(self, cause: BaseException) -> "PassFailed":
        """An exception of its own for each stream (one instance raised in several threads would collect all
        their frames)."""
        failure = PassFailed(f"the {self.kind} pass failed: {type(cause).__name__}: {cause}")
        failure.__cause__ = cause
        return failure


class PassFailed(RuntimeError):
    """A batched token-to-wave pass failed for the stream that handed in this chunk."""
