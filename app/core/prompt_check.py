"""A prompt's problems before it is saved as a voice: every one at once, with the figures behind them.

Cloning (``app.core.audio.prepare_prompt``) refuses a prompt at the first problem ``examine_prompt`` finds; a
page that lets someone record a prompt wants them all, so the next take can fix everything. A report without
problems means cloning will accept the audio; clipping is reported too, though cloning accepts it.
"""

from dataclasses import asdict, dataclass

import numpy as np

from app.core.audio import examine_prompt
from app.core.limits import Limits

FULL_SCALE = 0.99  # a sample this close to full scale is taken as clipped
CLIPPED_FRACTION = 0.001  # clipped when more than this fraction of the sound is at full scale


@dataclass(frozen=True)
class PromptReport:
    seconds: float  # the audio's length (at most a little over the limit: decoding stops there)
    speech_seconds: float  # from the first to the last sound, as cloning trims it
    peak: float  # the largest absolute sample, 1.0 = full scale
    clipped_fraction: float  # of the sound's samples, the fraction at full scale
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check_prompt(data: bytes, limits: Limits, prompt_text: str = "", param: str = "prompt_audio") -> PromptReport:
    """Blocking (decoding and analysis): run it in a worker thread."""
    sound = examine_prompt(data, param, limits.prompt_min_seconds, limits.prompt_max_seconds)
    problems = list(sound.problems)
    clipped = float(np.mean(np.abs(sound.speech) >= FULL_SCALE)) if sound.speech.size else 0.0
    if clipped > CLIPPED_FRACTION:
        problems.append(f"{clipped:.1%} of the sound is at full scale (clipped, distorted); record it less loudly")
    limit = limits.max_prompt_text_chars
    if len(prompt_text) > limit:
        problems.append(f"the transcript has {len(prompt_text)} characters; the limit is {limit}")
    return PromptReport(
        round(sound.seconds, 3), round(sound.speech_seconds, 3), round(sound.peak, 4), round(clipped, 5), problems
    )
