"""Streaming encoders (float32 mono chunks in, bytes out) and the stages before them: resampling and tempo.

Every encoder is made once per response and keeps its state across chunks, so a response is one valid
stream whatever the chunking; ``flush`` ends it.
"""

import struct
from fractions import Fraction
from typing import Protocol

import av
import numpy as np
import soxr

from app.core.audio import to_int16, wav_bytes


class Encoder(Protocol):
    def encode(self, chunk: np.ndarray) -> bytes: ...

    def flush(self) -> bytes:
        """The end of the stream."""

    def close(self) -> None:
        """Free what the encoder holds, whether or not the stream ended (idempotent)."""


class Stage(Protocol):
    """Audio in, audio out (resampled, stretched): float32 mono."""

    def process(self, chunk: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class PcmEncoder:
    """Raw signed 16-bit little-endian mono."""

    def encode(self, chunk: np.ndarray) -> bytes:
        return to_int16(chunk).tobytes()

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class StreamingWavEncoder(PcmEncoder):
    """A WAV header whose sizes say "unknown" (0xFFFFFFFF, as OpenAI's streamed WAV), then PCM as it comes."""

    def __init__(self, rate: int):
        self._header = _wav_header(rate, 0xFFFFFFFF)

    def encode(self, chunk: np.ndarray) -> bytes:
        header, self._header = self._header, b""
        return header + super().encode(chunk)

    def flush(self) -> bytes:
        header, self._header = self._header, b""
        return header


class WholeWavEncoder:
    """Collects the whole utterance into one WAV with exact sizes (for answers sent in one piece)."""

    def __init__(self, rate: int):
        self._rate = rate
        self._chunks: list[np.ndarray] = []

    def encode(self, chunk: np.ndarray) -> bytes:
        self._chunks.append(chunk)
        return b""

    def flush(self) -> bytes:
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        return wav_bytes(samples, self._rate)

    def close(self) -> None:
        self._chunks = []


def _wav_header(rate: int, data_size: int) -> bytes:
    riff_size = 0xFFFFFFFF if data_size == 0xFFFFFFFF else 36 + data_size
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


class _Sink:
    """A write-only file for PyAV: what the muxer wrote since the last ``take``. Not seekable, so muxers
    write their headers up front and never go back (FLAC's STREAMINFO keeps its length unknown)."""

    def __init__(self):
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class AvEncoder:
    """One PyAV container and codec for one whole stream (Ogg Opus, ADTS AAC, FLAC)."""

    def __init__(self, container: str, codec: str, rate: int, sample_format: str, bitrate: int | None = None):
        self._sink = _Sink()
        # Ogg pages every 100 ms instead of every second: the first audio leaves sooner
        options = {"page_duration": "100000"} if container == "ogg" else {}
        self._container = av.open(self._sink, mode="w", format=container, options=options)
        self._stream = self._container.add_stream(codec, rate=rate, layout="mono")
        if bitrate:
            self._stream.bit_rate = bitrate
        self._rate = rate
        self._format = sample_format
        self._pts = 0

    def encode(self, chunk: np.ndarray) -> bytes:
        if chunk.size:
            samples = to_int16(chunk) if self._format == "s16" else chunk.astype(np.float32, copy=False)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format=self._format, layout="mono")
            frame.sample_rate = self._rate
            frame.pts, self._pts = self._pts, self._pts + chunk.size
            frame.time_base = Fraction(1, self._rate)
            self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    def flush(self) -> bytes:
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return self._sink.take()

    def close(self) -> None:
        self._container.close()  # PyAV: a no-op once closed


class Resample:
    def __init__(self, source_rate: int, target_rate: int):
        self._stream = soxr.ResampleStream(source_rate, target_rate, 1, dtype="float32", quality="HQ")

    def process(self, chunk: np.ndarray) -> np.ndarray:
        return self._stream.resample_chunk(chunk.astype(np.float32, copy=False))

    def flush(self) -> np.ndarray:
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


class Filters:
    """ffmpeg audio filters (through PyAV's filter graph) as a stage: float32 mono in and out at one rate."""

    def __init__(self, rate: int, filters: list[tuple[str, str]]):
        self._rate = rate
        self._pts = 0
        self._graph = av.filter.Graph()
        node = self._graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))
        for name, args in [*filters, ("aformat", f"sample_fmts=flt:sample_rates={rate}:channel_layouts=mono")]:
            following = self._graph.add(name, args)
            node.link_to(following)
            node = following
        node.link_to(self._graph.add("abuffersink"))
        self._graph.configure()

    def process(self, chunk: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(chunk.astype(np.float32, copy=False).reshape(1, -1), "flt", "mono")
        frame.sample_rate = self._rate
        frame.pts, self._pts = self._pts, self._pts + chunk.size
        frame.time_base = Fraction(1, self._rate)
        self._graph.push(frame)
        return self._pull()

    def flush(self) -> np.ndarray:
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> np.ndarray:
        out = []
        while True:
            try:
                out.append(self._graph.pull().to_ndarray().reshape(-1))
            except (av.BlockingIOError, av.EOFError):
                break
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def Tempo(rate: int, factor: float) -> Filters:  # noqa: N802 - a stage, named like the others
    """Faster or slower speech at the same pitch: ffmpeg's ``atempo`` (WSOLA), chained for factors beyond 0.5-2."""
    return Filters(rate, [("atempo", f"{step:.6f}") for step in _tempo_steps(factor)])


def Pitch(rate: int, factor: float) -> Filters:  # noqa: N802
    """Higher or lower voice at the same speed: played ``factor`` times faster, resampled back, then stretched."""
    shifted = [("asetrate", f"{round(rate * factor)}"), ("aresample", f"{rate}")]
    return Filters(rate, shifted + [("atempo", f"{step:.6f}") for step in _tempo_steps(1 / factor)])


class Gain:
    """Louder or softer, clipped to full scale."""

    def __init__(self, factor: float):
        self._factor = np.float32(factor)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        return np.clip(chunk * self._factor, -1.0, 1.0)

    def flush(self) -> np.ndarray:
        return np.zeros(0, np.float32)


def _tempo_steps(factor: float) -> list[float]:
    steps = []
    while factor > 2.0:
        steps.append(2.0)
        factor /= 2.0
    while factor < 0.5:
        steps.append(0.5)
        factor /= 0.5
    return [*steps, factor]


class Chain:
    """Stages, then an encoder: itself an Encoder."""

    def __init__(self, stages: list[Stage], encoder: Encoder):
        self._stages = stages
        self._encoder = encoder

    def encode(self, chunk: np.ndarray) -> bytes:
        for stage in self._stages:
            chunk = stage.process(chunk)
        return self._encoder.encode(chunk) if chunk.size else b""

    def flush(self) -> bytes:
        out = b""
        for i, stage in enumerate(self._stages):
            tail = stage.flush()
            for later in self._stages[i + 1 :]:
                tail = later.process(tail)
            out += self._encoder.encode(tail) if tail.size else b""
        return out + self._encoder.flush()

    def close(self) -> None:
        self._encoder.close()
