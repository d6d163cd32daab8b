"""A speech task: text that arrives in pieces (an LLM's output, sentence by sentence), spoken in one voice as one
encoded stream. The voice is resolved once; each sentence is synthesized as soon as it is complete, through the
same encoder, so the task's audio is one valid stream (one MP3, one Ogg Opus, one WAV)."""

import asyncio
import dataclasses

import numpy as np

from app.core.encoders import Encoder
from app.core.formats import AudioOutput
from app.core.speech import Disconnected, Prepared, SpeechRequest, SpeechService
from app.core.synthesis import AudioStream, close_encoder
from app.core.text import SentenceBuffer


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


class SpeechTask:
    """``start`` once, then ``speak`` each sentence (``sentences`` finds them in the text), then ``finish``; ``close``
    on every path."""

    def __init__(self, service: SpeechService, request: SpeechRequest, output: AudioOutput):
        self._service, self._request, self._output = service, request, output
        self._prepared: Prepared | None = None
        self._encoder: Encoder | None = None
        self._buffer = SentenceBuffer()
        self._current: AudioStream | None = None  # the sentence being spoken: its worker thread uses the encoder
        self._finishing: asyncio.Future | None = None

    async def start(self) -> None:
        """Check the request and resolve its voice (the text comes later)."""
        self._prepared = await self._service.prepare(self._request, with_text=False)
        tempo = self._request.speed / self._prepared.engine_request.speed
        self._encoder = self._output.encoder(self._service.engine.sample_rate, tempo)

    def sentences(self, text: str, flush: bool = False) -> list[str]:
        """The sentences ``text`` completes (with ``flush``, all that is buffered), but for those with nothing to
        speak ("..." alone: not an error in a stream of text)."""
        complete = self._buffer.add(text) + (self._buffer.rest() if flush else [])
        return [sentence for sentence in complete if any(ch.isalnum() for ch in sentence)]

    async def speak(self, sentence: str, is_disconnected: Disconnected = None) -> AudioStream:
        text = self._service.check_text(sentence)
        request = dataclasses.replace(self._prepared.engine_request, text=text)
        await self._settle()
        # known before its first bytes: from then on its worker thread may be using the encoder
        self._current = await self._service.synthesizer.open(request, _Continuing(self._encoder), is_disconnected)
        await self._current.start()
        return self._current

    async def finish(self) -> bytes:
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
