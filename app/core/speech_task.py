"""A speech task: text that arrives in pieces (an LLM's output, sentence by sentence), spoken in one voice as one
encoded stream. The voice is resolved once; each sentence is synthesized as soon as it is complete, through the
same encoder, so the task's audio is one valid stream (one MP3, one Ogg Opus, one WAV).

The sentence loop is here and nowhere else: ``events`` yields what happens (a sentence begins, its audio, it ends,
the task is done, or it failed or stalled) and each door only renders those in its protocol.
"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import numpy as np

from app.core.audio_stream import AudioStream, close_encoder
from app.core.encoders import Encoder
from app.core.errors import DomainError
from app.core.formats import AudioOutput
from app.core.speech import Disconnected, Prepared, SpeechRequest, SpeechService
from app.core.text import SentenceBuffer, speakable_text


class _Continuing:
    """The task's encoder as each sentence's stream sees it: the end of a sentence is not the end of the audio."""

    def __init__(self, encoder: Encoder):
        self.inner = encoder

    def encode(self, chunk: np.ndarray) -> bytes:
        return self.inner.encode(chunk)

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _flush_and_close(encoder: Encoder) -> bytes:
    try:
        return encoder.flush()
    finally:
        close_encoder(encoder)


@dataclasses.dataclass(frozen=True)
class SentenceBegins:
    index: int
    text: str


@dataclasses.dataclass(frozen=True)
class Audio:
    data: bytes
    index: int  # the sentence it belongs to; the tail's is the last sentence's (-1 when none was spoken)
    tail: bool = False  # the encoder's last frames, after the last sentence


@dataclasses.dataclass(frozen=True)
class SentenceEnds:
    index: int
    text: str


@dataclasses.dataclass(frozen=True)
class Done:
    """Every sentence was spoken and the audio is complete."""


@dataclasses.dataclass(frozen=True)
class Failed:
    error: DomainError  # nothing more is spoken


@dataclasses.dataclass(frozen=True)
class Stalled:
    """The listener read no audio for the stall timeout, or left (the door knows which): nothing more is spoken."""


TaskEvent = SentenceBegins | Audio | SentenceEnds | Done | Failed | Stalled


class SpeechTask:
    """``start`` once, ``add`` text as it arrives and ``end`` it, and render ``events``; ``close`` on every path."""

    def __init__(self, service: SpeechService, request: SpeechRequest, output: AudioOutput):
        self._service, self._request, self._output = service, request, output
        self._prepared: Prepared | None = None
        self._encoder: Encoder | None = None
        self._buffer = SentenceBuffer()
        self._current: AudioStream | None = None  # the sentence being spoken: its worker thread uses the encoder
        self._finishing: asyncio.Future | None = None
        self._ready: asyncio.Queue[str | None] = asyncio.Queue()  # complete sentences; None: the text ended
        self._ended = False
        self._spoken = 0  # sentences spoken so far (the next one's index)

    async def start(self) -> None:
        """Check the request and resolve its voice (the text comes later)."""
        self._prepared = await self._service.prepare(self._request, with_text=False)
        tempo = self._request.speed / self._prepared.engine_request.speed
        self._encoder = self._service.encoder(self._output, tempo)

    def add(self, text: str, flush: bool = False) -> None:
        """More of the task's text: each sentence it completes (with ``flush``: all that is buffered) is spoken.
        ``Invalid`` for text no protocol can carry back (it is refused whole, before any of it is buffered)."""
        for sentence in self._sentences(speakable_text(text), flush):
            self._ready.put_nowait(sentence)

    def end(self) -> None:
        """No more text: what is buffered is the last sentence."""
        if not self._ended:
            self._ended = True
            self.add("", flush=True)
            self._ready.put_nowait(None)

    async def events(self, is_disconnected: Disconnected = None, wait: bool = True) -> AsyncIterator[TaskEvent]:
        """Speak each sentence as it is complete: its events, until ``Done`` (after ``end``), ``Failed`` or ``Stalled``.
        ``wait=False``: return once the sentences complete so far are spoken (a door that speaks as text arrives)."""
        while True:
            if not wait and self._ready.empty():
                return
            sentence = await self._ready.get()
            try:
                if sentence is None:
                    tail = await self._finish()
                    if tail:
                        yield Audio(tail, self._spoken - 1, tail=True)
                    yield Done()
                    return
                index = self._spoken
                yield SentenceBegins(index, sentence)
                stream = await self._speak(sentence, is_disconnected)
                async for chunk in stream.chunks():
                    yield Audio(chunk, index)
                if stream.ended_early:
                    yield Stalled()
                    return
                self._spoken += 1
                yield SentenceEnds(index, sentence)
            except DomainError as exc:
                yield Failed(exc)
                return

    def _sentences(self, text: str, flush: bool = False) -> list[str]:
        """The sentences ``text`` completes (with ``flush``, all that is buffered), but for those with nothing to
        speak ("..." alone: not an error in a stream of text)."""
        complete = self._buffer.add(text) + (self._buffer.rest() if flush else [])
        return [sentence for sentence in complete if any(ch.isalnum() for ch in sentence)]

    async def _speak(self, sentence: str, is_disconnected: Disconnected = None) -> AudioStream:
        text = self._service.check_text(sentence)
        request = dataclasses.replace(self._prepared.engine_request, text=text)
        await self._settle()
        # known before its first bytes: from then on its worker thread may be using the encoder
        self._current = await self._service.synthesizer.open(request, _Continuing(self._encoder), is_disconnected)
        await self._current.start()
        return self._current

    async def _finish(self) -> bytes:
        """The end of the task's audio (an encoder's last frames)."""
        await self._settle()
        encoder, self._encoder = self._encoder, None
        if encoder is None:
            return b""
        # flushed and closed in one worker call that a cancelled caller cannot cut in two
        self._finishing = asyncio.ensure_future(asyncio.to_thread(_flush_and_close, encoder))
        return await asyncio.shield(self._finishing)

    async def close(self) -> None:
        """Stop what is being spoken and free the encoder (after the worker that uses it has ended)."""
        if self._current is not None:
            self._current.close()
        await self._settle()
        if self._finishing is not None:
            await asyncio.wait([self._finishing])
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            close_encoder(encoder)

    async def _settle(self) -> None:
        """Wait until the last sentence's worker has let go of the encoder (however its stream ended)."""
        stream = self._current
        if stream is not None:
            await asyncio.wait([stream.done])  # cancelled meanwhile: still recorded, so close() waits again
            if self._current is stream:
                self._current = None
