"""Audio in and out: decode any upload to 16 kHz mono, prepare prompts, write WAV."""

import io
import wave
from dataclasses import dataclass

import numpy as np
import soxr

from app.core.errors import Invalid

PROMPT_RATE = 16000
WIDE_RATE = 24000  # CosyVoice2/3 compute their prompt's mel features at 24 kHz (CosyVoice3 up to 12 kHz)
_PEAK_TARGET = 0.8
_SILENCE_PEAK = 10 ** (-60 / 20)  # below -60 dBFS everywhere: nothing to clone from


def decode_to_mono(data: bytes, param: str, rate: int = PROMPT_RATE, max_seconds: float | None = None):
    """Decode any container/codec PyAV knows into float32 mono at ``rate``.

    Decoding stops once ``max_seconds`` is exceeded (a tiny file can expand to hours of audio);
    the returned array is then longer than ``max_seconds`` and callers report it as too long.
    """
    import av  # FFmpeg's libraries, loaded where audio is decoded: the engines alone do not need them

    if not data:
        raise Invalid(param, "the file is empty")
    limit = None if max_seconds is None else int((max_seconds + 0.5) * rate)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise Invalid(param, "the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pieces, total = [], 0
            for frame in container.decode(audio=0):
                frame.pts = None
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    total += pieces[-1].size
                if limit is not None and total > limit:
                    break
            else:
                for out in resampler.resample(None):
                    pieces.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise Invalid(param, f"not a readable audio file ({exc.strerror or 'decode failed'})") from exc
    if not pieces:
        raise Invalid(param, "the file contains no audio samples")
    return np.concatenate(pieces).astype(np.float32, copy=False)


def _trim_silence(x: np.ndarray, rate: int, top_db: float = 60.0) -> np.ndarray:
    frame, hop = rate // 40, rate // 100  # 25 ms frames every 10 ms
    if x.size < frame:
        return x
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    start, end = loud[0] * hop, min(x.size, loud[-1] * hop + frame)
    return x[start:end]


@dataclass(frozen=True)
class PromptAudio:
    """A prompt ready for cloning: trimmed, peak-normalised, 0.2 s of silence after it, mono float32.

    ``samples`` at 16 kHz (speaker embedding, speech tokens, what is stored as a voice's source) and the
    same audio at 24 kHz in ``wideband`` (CosyVoice's prompt mel features, which a 16 kHz copy would cut
    at 8 kHz).
    """

    samples: np.ndarray
    speech_seconds: float
    wideband: np.ndarray


@dataclass(frozen=True)
class PromptSound:
    """A prompt's audio as cloning decodes it (24 kHz mono), and what keeps it from making a voice."""

    seconds: float
    peak: float  # the largest absolute sample, 1.0 = full scale
    speech: np.ndarray  # from its first to its last sound; empty when silent
    problems: list[str]  # in the order cloning meets them: it refuses the first

    @property
    def speech_seconds(self) -> float:
        return self.speech.size / WIDE_RATE


def examine_prompt(data: bytes, param: str, min_seconds: float, max_seconds: float) -> PromptSound:
    """Decode a prompt and find all its problems; audio that cannot be decoded raises ``Invalid(param)``."""
    audio = decode_to_mono(data, param, rate=WIDE_RATE, max_seconds=max_seconds)
    problems = []
    finite = np.isfinite(audio)
    if not finite.all():
        problems.append("the audio contains NaN or infinite samples")
        audio = np.where(finite, audio, 0.0).astype(np.float32)
    if audio.size > max_seconds * WIDE_RATE:
        problems.append(f"the audio is longer than {max_seconds:g} s; send a shorter prompt")
    peak = float(np.max(np.abs(audio)))
    speech = audio[:0] if peak < _SILENCE_PEAK else _trim_silence(audio, WIDE_RATE)
    if peak < _SILENCE_PEAK:
        problems.append("the audio is silent (nothing in it is louder than -60 dBFS)")
    elif (seconds := speech.size / WIDE_RATE) < min_seconds:
        problems.append(f"only {seconds:.2f} s of sound; a prompt needs at least {min_seconds:g} s of speech")
    return PromptSound(audio.size / WIDE_RATE, peak, speech, problems)


def prepare_prompt(data: bytes, param: str, min_seconds: float, max_seconds: float) -> PromptAudio:
    sound = examine_prompt(data, param, min_seconds, max_seconds)
    if sound.problems:
        raise Invalid(param, sound.problems[0])
    speech = sound.speech * (_PEAK_TARGET / max(sound.peak, _PEAK_TARGET))
    tail = min(int(0.2 * WIDE_RATE), int(max_seconds * WIDE_RATE) - speech.size)  # the whole within the limit
    wide = np.concatenate([speech, np.zeros(max(tail, 0))]).astype(np.float32)
    narrow = soxr.resample(wide, WIDE_RATE, PROMPT_RATE).astype(np.float32, copy=False)
    return PromptAudio(narrow, sound.speech_seconds, wide)


def to_int16(chunk: np.ndarray) -> np.ndarray:
    return (np.clip(chunk, -1.0, 1.0) * 32767.0).astype("<i2")


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    return pcm16_wav(to_int16(samples).tobytes(), rate)


def pcm16_wav(raw: bytes, rate: int) -> bytes:
    """Little-endian int16 mono samples as a WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(raw)
    return buf.getvalue()
