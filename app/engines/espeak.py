"""Embedded engine: libespeak-ng 1.52 (``app.engines.libespeak``).

It speaks real, intelligible Mandarin, English, Cantonese, Japanese and Korean with no model
weights. Cloning here approximates a voice: it reproduces the prompt's median pitch, pitch range
and speaking rate, not its timbre (that needs the CosyVoice engine).
"""

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from app.core import prosody
from app.core.audio import PROMPT_RATE, PromptAudio
from app.core.engine import Mode, SynthesisRequest, VoiceRejected
from app.core.text import split_sentences
from app.engines.libespeak import DEFAULT_RATE, MAX_RATE, MIN_RATE, VARIANTS, Library


@dataclass(frozen=True)
class _Builtin:
    language: str
    variant: str


# Named like CosyVoice-300M-SFT's speakers so that existing clients keep working.
_BUILTINS = {
    "中文女": _Builtin("cmn", "female"),
    "中文男": _Builtin("cmn", "male"),
    "英文女": _Builtin("en-us", "female"),
    "英文男": _Builtin("en-us", "male"),
    "日语男": _Builtin("ja", "male"),
    "粤语女": _Builtin("yue", "female"),
    "韩语女": _Builtin("ko", "female"),
}

_ISO_639 = {"cmn": "zh", "en-us": "en", "ja": "ja", "yue": "yue", "ko": "ko"}

_CALIBRATION_TEXT = {
    "en-us": "The quick brown fox jumps over the lazy dog, and then it runs back home again.",
    "cmn": "今天天气很好，我们一起去公园散步，然后回家吃饭。",
}
_PITCH_STEPS = (0, 25, 50, 75, 100)
_RANGE_STEPS = (0, 50, 100)
_FEMALE_ABOVE_HZ = 165.0


def language_of(text: str) -> str:
    if re.search(r"[\uac00-\ud7af]", text):
        return "ko"
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    if re.search(r"[\u3400-\u9fff\uf900-\ufaff]", text):
        return "cmn"
    return "en-us"


# Keywords understood in 自然语言控制 instructions: (pattern, effect on the voice).
_INSTRUCTIONS = (
    (re.compile(r"快|\b(fast|faster|quick|quickly)\b", re.I), {"speed": 1.3}),
    (re.compile(r"慢|\b(slow|slower|slowly)\b", re.I), {"speed": 0.75}),
    (re.compile(r"高(?!兴)|\b(high|higher)\b", re.I), {"pitch": 20}),
    (re.compile(r"低|\b(deep|deeper|low|lower)\b", re.I), {"pitch": -20}),
    (re.compile(r"开心|高兴|激动|兴奋|\b(happy|excited|cheerful)\b", re.I), {"range": 85, "pitch": 10}),
    (re.compile(r"悲伤|难过|平静|\b(sad|calm|flat)\b", re.I), {"range": 20}),
    (re.compile(r"女|\b(female|woman|girl)\b", re.I), {"variant": "female"}),
    (re.compile(r"男|\b(male|man|boy)\b", re.I), {"variant": "male"}),
)


@dataclass(frozen=True)
class _Calibration:
    """How espeak's knobs map onto measurable prosody (deterministic, measured once per process)."""

    f0: dict[str, np.ndarray]  # median F0 [range step, pitch step] per variant
    spread_at_50: dict[str, float]  # F0 spread in semitones at range 50, per variant
    syllable_rate: dict[str, float]  # syllables per second at the default rate, per language

    def pitch_for(self, variant: str, f0_hz: float, pitch_range: float) -> float:
        """The pitch setting whose median F0 is ``f0_hz`` at this range (the range shifts the median)."""
        curve = np.array([np.interp(pitch_range, _RANGE_STEPS, column) for column in self.f0[variant].T])
        # keep the curve rising: a mis-tracked point (octave error) must not fold it back
        rising = np.minimum.accumulate(curve[::-1])[::-1]
        return float(np.interp(f0_hz, rising, _PITCH_STEPS))


@functools.cache
def _calibrate(lib: Library) -> _Calibration:
    f0, spread_at_50 = {}, {}
    text = _CALIBRATION_TEXT["en-us"]
    for variant, name in VARIANTS.items():
        grid = np.zeros((len(_RANGE_STEPS), len(_PITCH_STEPS)))
        for i, pitch_range in enumerate(_RANGE_STEPS):
            for j, pitch in enumerate(_PITCH_STEPS):
                audio = lib.speak(text, f"en-us+{name}", DEFAULT_RATE, pitch, pitch_range)
                measured = prosody.measure(audio, lib.rate)
                grid[i, j] = measured.median_f0_hz
                if pitch == pitch_range == 50:
                    spread_at_50[variant] = max(measured.range_semitones, 0.5)
        f0[variant] = grid
    syllable_rate = {
        language: prosody.measure(
            lib.speak(sample, language, DEFAULT_RATE, 50, 50), lib.rate, sample
        ).syllables_per_second
        for language, sample in _CALIBRATION_TEXT.items()
    }
    return _Calibration(f0, spread_at_50, syllable_rate)


class EspeakEngine:
    name = "espeak"
    description = "espeak-ng 1.52 (embedded)"
    sample_rate = 24000  # CosyVoice2/3's rate, so clients see one rate whichever engine runs
    capabilities = frozenset(Mode)

    def __init__(self):
        self._lib = Library.get()
        self._builtins = {k: v for k, v in _BUILTINS.items() if self._lib.has_voice(v.language)}
        self._calibration = _calibrate(self._lib)

    def builtin_speakers(self) -> list[str]:
        return list(self._builtins)

    def voice_languages(self, speaker: str | None) -> list[str]:
        """A built-in speaks its espeak-ng voice's language; a cloned voice, the languages ``language_of`` tells."""
        if speaker in self._builtins:
            return [_ISO_639[self._builtins[speaker].language]]
        return ["zh", "en", "ja", "ko"]

    def make_voice(self, prompt_text: str, prompt: PromptAudio) -> dict:
        measured = prosody.measure(prompt.samples, PROMPT_RATE, prompt_text)
        if measured.median_f0_hz <= 0:
            raise VoiceRejected("no voiced speech found in the prompt audio (its pitch cannot be measured)")
        variant = "female" if measured.median_f0_hz > _FEMALE_ABOVE_HZ else "male"
        pitch_range = float(np.clip(50 * measured.range_semitones / self._calibration.spread_at_50[variant], 0, 100))
        pitch = self._calibration.pitch_for(variant, measured.median_f0_hz, pitch_range)
        rate = DEFAULT_RATE
        if measured.syllables_per_second:
            reference = self._calibration.syllable_rate["cmn" if language_of(prompt_text) != "en-us" else "en-us"]
            rate = DEFAULT_RATE * measured.syllables_per_second / reference
        return {
            "engine": self.name,
            "variant": variant,
            "pitch": int(round(pitch)),
            "range": int(np.clip(round(pitch_range), 0, 100)),
            "rate": int(np.clip(round(rate), MIN_RATE, MAX_RATE)),
            "measured": {
                "median_f0_hz": round(measured.median_f0_hz, 1),
                "pitch_range_semitones": round(measured.range_semitones, 2),
                "syllables_per_second": round(measured.syllables_per_second or 0.0, 2),
                "speech_seconds": round(measured.speech_seconds, 2),
            },
        }

    def voice_problem(self, profile: object) -> str | None:
        if not isinstance(profile, dict) or profile.get("engine") != self.name:
            return "not a voice made by the espeak engine"
        for key, low, high in (("pitch", 0, 100), ("range", 0, 100), ("rate", MIN_RATE, MAX_RATE)):
            value = profile.get(key)
            if type(value) is not int or not low <= value <= high:
                return f"{key} must be an integer from {low} to {high}"
        variant = profile.get("variant")
        if not isinstance(variant, str) or variant not in VARIANTS:
            return f"variant must be one of {', '.join(VARIANTS)}"
        return None

    def describe_voice(self, profile: dict) -> dict:
        described = {key: profile[key] for key in ("variant", "pitch", "range", "rate")}
        measured = profile.get("measured")
        if isinstance(measured, dict):  # informative only: plain numbers, nothing else from a stored file
            described["measured"] = {k: v for k, v in measured.items() if type(v) in (int, float)}
        return described

    def synthesize(self, request: SynthesisRequest) -> Iterator[np.ndarray]:
        language, settings = self._voice_settings(request)
        if request.mode is Mode.INSTRUCT:
            settings = _apply_instruction(settings, request.instruct_text)
        rate = int(np.clip(settings["rate"] * request.speed * settings.get("speed", 1.0), MIN_RATE, MAX_RATE))
        voice = f"{language}+{VARIANTS[settings['variant']]}"
        resampler = soxr.ResampleStream(self._lib.rate, self.sample_rate, 1, dtype="float32")
        for sentence in split_sentences(request.text):
            if request.cancelled is not None and request.cancelled.is_set():  # nobody wants the rest
                return
            audio = self._lib.speak(sentence, voice, rate, settings["pitch"], settings["range"])
            out = resampler.resample_chunk(audio)
            if out.size:
                yield out
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield tail

    def _voice_settings(self, request: SynthesisRequest) -> tuple[str, dict]:
        if request.voice is not None:  # only the checked settings, nothing else a stored file may carry
            return language_of(request.text), {key: request.voice[key] for key in ("variant", "pitch", "range", "rate")}
        builtin = self._builtins[request.speaker]
        return builtin.language, {"variant": builtin.variant, "pitch": 50, "range": 50, "rate": DEFAULT_RATE}


def _apply_instruction(settings: dict, instruction: str) -> dict:
    settings = dict(settings)
    for pattern, effect in _INSTRUCTIONS:
        if not pattern.search(instruction):
            continue
        for key, value in effect.items():
            if key == "speed":
                settings["speed"] = settings.get("speed", 1.0) * value
            elif key == "pitch":
                settings["pitch"] = int(np.clip(settings["pitch"] + value, 0, 100))
            else:
                settings[key] = value
    return settings
