"""Audio for the tests: encode generated audio into real formats, decode what the service returns, and what a
decoder may add or drop."""

import io
from dataclasses import dataclass

import av
import numpy as np

from app.core import prosody
from app.core.audio import wav_bytes as wav  # noqa: F401 - re-exported for the tests
from tests.support.speech import ENGINE_RATE

# (container format, codec, file suffix, extra codec options)
FORMATS = {
    "wav_s16": ("wav", "pcm_s16le", "wav", {}),
    "wav_f32": ("wav", "pcm_f32le", "wav", {}),
    "mp3": ("mp3", "libmp3lame", "mp3", {}),
    "m4a": ("ipod", "aac", "m4a", {}),
    "ogg_vorbis": ("ogg", "vorbis", "ogg", {"strict": "-2"}),
    "ogg_opus": ("ogg", "libopus", "opus", {}),
    "webm": ("webm", "libopus", "webm", {}),
    "flac": ("flac", "flac", "flac", {}),
}


@dataclass
class Decoded:
    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return self.samples.size / self.rate

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.samples.astype(np.float64) ** 2))) if self.samples.size else 0.0

    def median_f0(self) -> float:
        return prosody.measure(self.samples, self.rate).median_f0_hz


def decode(data: bytes) -> Decoded:
    """Decode any container PyAV reads (the whole byte string as ONE stream) to float32 mono."""
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        pieces = []
        for frame in container.decode(audio=0):
            frame.pts = None
            pieces += [out.to_ndarray().reshape(-1) for out in to_mono.resample(frame)]
        pieces += [out.to_ndarray().reshape(-1) for out in to_mono.resample(None)]
    return Decoded(np.concatenate(pieces) if pieces else np.zeros(0, np.float32), rate)


def decode_pcm(data: bytes, rate: int) -> Decoded:
    return Decoded(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, rate)


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Encode float32 mono samples into one of FORMATS with PyAV."""
    container_format, codec, _, options = FORMATS[fmt]
    out_rate = 48000 if "opus" in codec else rate
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, options=options)
        layout = "stereo" if codec == "vorbis" else "mono"  # FFmpeg's own vorbis encoder is stereo-only
        stream.layout = layout
        context = stream.codec_context
        resampler = av.AudioResampler(
            format=context.format.name, layout=layout, rate=out_rate, frame_size=context.frame_size or None
        )
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for resampled in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def tone(seconds: float, rate: int = 16000, f0: float = 150.0, amplitude: float = 0.3) -> np.ndarray:
    """A voiced, speech-like harmonic signal with syllable-like bursts."""
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (amplitude * voiced * envelope / 2).astype(np.float32)


def decoder_slack(name: str, rate: int) -> int:
    """Samples a decoder may add or drop: one codec frame plus the codec's documented delay."""
    return {
        "mp3": 1152,  # one frame; the stream's Info frame tells decoders LAME's delay
        "opus": 960 + 312 * rate // 48000,  # one 20 ms frame (at 48 kHz) + the pre-skip (312 at 48 kHz)
        "aac": 1024 + 1024,  # one frame + AAC-LC's priming, which ADTS has no field to announce
        "flac": 0,
        "wav": 0,
        "pcm": 0,
    }[name] + (2 if name in ("wav", "pcm", "flac") else 0)


def audible(response, rate: int = ENGINE_RATE) -> Decoded:
    """A 200 answer's audio, checked: it decodes at ``rate``, lasts over 0.2 s, and is finite and not silent."""
    assert response.status_code == 200, response.text
    decoded = decode(response.content)
    assert decoded.rate == rate
    assert decoded.seconds > 0.2
    assert np.isfinite(decoded.samples).all() and decoded.rms > 1e-4
    return decoded
