"""The format table: each output format's media type, file extension and streaming encoder.

A door picks a format and (where its protocol allows) a sample rate into an ``AudioOutput``; the core makes
one encoder from it per response and hands it to the Synthesizer.
"""

from collections.abc import Callable
from dataclasses import dataclass

from app.core.encoders import (
    AvEncoder,
    Chain,
    Encoder,
    Gain,
    PcmEncoder,
    Pitch,
    Resample,
    Stage,
    StreamingWavEncoder,
    Tempo,
    WholeWavEncoder,
)
from app.core.errors import Unsupported
from app.core.mp3 import Mp3Encoder

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus encodes; Ogg Opus always decodes at 48 kHz


@dataclass(frozen=True)
class AudioFormat:
    name: str
    media_type: str
    extension: str
    make: Callable[[int, int], Encoder]  # (sample rate, bitrate in kbps) -> a fresh encoder
    codec_rates: tuple[int, ...] | None = None  # rates the codec encodes (None: any); others are resampled


def _opus(rate: int, kbps: int) -> Encoder:
    return AvEncoder("ogg", "libopus", rate, "flt", kbps * 1000)


def _aac(rate: int, kbps: int) -> Encoder:
    return AvEncoder("adts", "aac", rate, "fltp", kbps * 1000)


def _flac(rate: int, _kbps: int) -> Encoder:
    return AvEncoder("flac", "flac", rate, "s16")


FORMATS = {
    f.name: f
    for f in (
        AudioFormat("mp3", "audio/mpeg", "mp3", Mp3Encoder, SAMPLE_RATES),
        AudioFormat("opus", "audio/ogg", "opus", _opus, _OPUS_RATES),
        AudioFormat("aac", "audio/aac", "aac", _aac, SAMPLE_RATES),
        AudioFormat("flac", "audio/flac", "flac", _flac, None),
        AudioFormat("wav", "audio/wav", "wav", lambda rate, _: StreamingWavEncoder(rate), None),
        AudioFormat("pcm", "audio/pcm", "pcm", lambda rate, _: PcmEncoder(), None),
    )
}


def audio_format(name: str) -> AudioFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise Unsupported("format", f"{name!r} is not a format; use one of {', '.join(FORMATS)}") from None


@dataclass(frozen=True)
class AudioOutput:
    """How a response wants its audio: a format, a sample rate (None: the engine's), and the bitrate."""

    format: AudioFormat
    sample_rate: int | None = None
    bitrate_kbps: int | None = None  # None: the service's (COSYVOICE_MP3_BITRATE_KBPS)
    whole: bool = False  # sent in one piece: a WAV then carries its exact sizes
    gain: float = 1.0  # louder (>1) or softer
    pitch: float = 1.0  # a higher (>1) or lower voice, at the same speed

    def rate_for(self, engine_rate: int) -> int:
        """The rate the listener gets (a codec that cannot encode it gets the next rate up it can)."""
        wanted = self.sample_rate or engine_rate
        rates = self.format.codec_rates
        if rates is None or wanted in rates:
            return wanted
        return min((r for r in rates if r >= wanted), default=max(rates))

    def encoder(self, engine_rate: int, tempo: float = 1.0, default_kbps: int = 64) -> Encoder:
        """A fresh encoder for one response: time-stretch, resample, encode."""
        rate = self.rate_for(engine_rate)
        stages: list[Stage] = []
        if abs(tempo - 1.0) > 1e-6:
            stages.append(Tempo(engine_rate, tempo))
        if abs(self.pitch - 1.0) > 1e-6:
            stages.append(Pitch(engine_rate, self.pitch))
        if abs(self.gain - 1.0) > 1e-6:
            stages.append(Gain(self.gain))
        if rate != engine_rate:
            stages.append(Resample(engine_rate, rate))
        if self.format.name == "wav" and self.whole:
            encoder: Encoder = WholeWavEncoder(rate)
        else:
            encoder = self.format.make(rate, self.bitrate_kbps or default_kbps)
        return Chain(stages, encoder) if stages else encoder
