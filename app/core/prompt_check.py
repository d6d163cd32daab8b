"""A prompt's problems before it is saved as a voice: every one of them at once, in words for a person.

Cloning (``app.core.audio.prepare_prompt``) stops at the first problem it meets; a page that lets someone record
a prompt wants them all, and the figures behind them, so the next take can fix everything. The thresholds are
cloning's own (``_SILENCE_PEAK``, ``prompt_min_seconds``, ``prompt_max_seconds``), so a report without problems
means cloning will accept the audio. The audio is analysed as cloning decodes it (mono, 24 kHz).
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from app.config import Settings
from app.core.audio import _SILENCE_PEAK, WIDE_RATE, _trim_silence, decode_to_mono

FULL_SCALE = 0.99  # a sample this close to full scale is taken as clipped
CLIPPED_FRACTION = 0.001  # clipped when more than this fraction of the sound is at full scale


@dataclass(frozen=True)
class PromptReport:
    seconds: float  # the audio's length (at most a little over the limit: decoding stops there)
    speech_seconds: float  # from the first to the last sound, as cloning trims it
    peak: float  # the largest absolute sample, 1.0 = full scale
    clipped_fraction: float  # of the sound's samples, the fraction at full scale
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check_prompt(data: bytes, settings: Settings, prompt_text: str = "", param: str = "prompt_audio") -> PromptReport:
    """What would keep ``data`` from making a good voice; audio that cannot be decoded raises ``Invalid(param)``.

    Blocking (decoding and analysis): run it in a worker thread.
    """
    low, high = settings.prompt_min_seconds, settings.prompt_max_seconds
    audio = decode_to_mono(data, param, rate=WIDE_RATE, max_seconds=high)
    problems = []
    finite = np.isfinite(audio)
    if not finite.all():
        problems.append("The audio contains invalid samples (NaN or infinity); export it again.")
        audio = np.where(finite, audio, 0.0).astype(np.float32)
    seconds = audio.size / WIDE_RATE
    if seconds > high:
        problems.append(f"The audio is longer than {high:g} s; a prompt must be at most {high:g} s long.")
    peak = float(np.max(np.abs(audio)))
    silent = peak < _SILENCE_PEAK
    sound = audio[:0] if silent else _trim_silence(audio, WIDE_RATE)
    speech_seconds = sound.size / WIDE_RATE
    clipped = float(np.mean(np.abs(sound) >= FULL_SCALE)) if sound.size else 0.0
    if silent:
        problems.append("The audio is silent: nothing in it is louder than -60 dBFS.")
    elif speech_seconds < low:
        problems.append(f"Only {speech_seconds:.2f} s of sound; a prompt needs at least {low:g} s of speech.")
    if clipped > CLIPPED_FRACTION:
        problems.append(
            f"{clipped:.1%} of the sound is at full scale (clipped, distorted); record it again less loudly."
        )
    if len(prompt_text) > settings.max_prompt_text_chars:
        problems.append(
            f"The transcript has {len(prompt_text)} characters; the limit is {settings.max_prompt_text_chars}."
        )
    return PromptReport(round(seconds, 3), round(speech_seconds, 3), round(peak, 4), round(clipped, 5), problems)
