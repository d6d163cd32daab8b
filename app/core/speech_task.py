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


class SpeechTask:
    """``start`` once, then ``speak`` each sentence (``sentences`` finds them in the text), then ``finish``; ``close``
    on every path."""

    def __init__(self, service: SpeechService, request: SpeechRequest, output: AudioOutput):
        self._service, self._request, self._output = service, request, output
        self._prepared: Prepared | None = None
        self._encoder: Encoder | None = None
        self._buffer = SentenceBuffer()
        self._current: AudioStream | None = None  # the sentence being spoken: its worker thread uses the encoder

    async def start(self) -> None:
        """Check the request and resolve its voice (the text comes later)."""
        self._prepared = await self._service.prepare(self._request, with_text=False)
        tempo = self._request.speed / self._prepared.engine_request.speed
        self._encoder = self._output.encoder(self._service.engine.sample_rate, tempo)

    def sentences(self, text: str, flush: bool = False) -> list[str]:
        """The sentences ``text`` completes (with ``flush``, all that is buffered)."""
        complete = self._buffer.add(text)
        return complete + self._buffer.rest() if flush else complete

    def speakable(self, sentence: str) -> bool:
        return any(ch.isalnum() for ch in sentence)

    async def speak(self, sentence: str, is_disconnected: Disconnected = None) -> AudioStream:
        text = self._service.check_text(sentence)
        request = dataclasses.replace(self._prepared.engine_request, text=text)
        await self._settle()
        self._current = await self._service.synthesizer.stream(request, _Continuing(self._encoder), is_disconnected)
        return self._current

    async def finish(self) -> bytes:
        """The end of the task's audio (an encoder's last frames)."""
        await self._settle()
        encoder, self._encoder = self._encoder, None
        if encoder is None:
            return b""
        try:
            return await asyncio.to_thread(encoder.flush)
        finally:
            close_encoder(encoder)

    async def close(self) -> None:
        """Stop what is being spoken and free the encoder (after the worker that uses it has ended)."""
        if self._current is not None:
            self._current.close()
        await self._settle()
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            close_encoder(encoder)

    async def _settle(self) -> None:
        stream, self._current = self._current, None
        if stream is not None:
            await asyncio.wait([stream.done])  # its outcome was the consumer's business
