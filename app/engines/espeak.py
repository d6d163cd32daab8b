"""Embedded engine: libespeak-ng 1.52 (from the espeakng-loader wheel) through ctypes.

It speaks real, intelligible Mandarin, English, Cantonese, Japanese and Korean with no model
weights. Cloning here approximates a voice: it reproduces the prompt's median pitch, pitch range
and speaking rate, not its timbre (that needs the CosyVoice engine).
"""

import ctypes
import functools
import importlib.metadata
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import espeakng_loader
import numpy as np
import soxr

from app.core import prosody
from app.core.audio import PROMPT_RATE, PromptAudio
from app.core.text import split_sentences
from app.engines.base import Mode, SynthesisRequest, VoiceRejected

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_DEFAULT_RATE = 175
_MIN_RATE, _MAX_RATE = 80, 450

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


# espeak's stock variants add pitch flutter, echo, breath and roughness whose state carries over from one
# utterance to the next, so the same text never sounds the same twice. Our own male and female variants
# leave those out: identical input gives identical audio.
_VARIANTS = {
    "male": "svc_male",
    "female": "svc_female",
}
_VARIANT_FILES = {
    "svc_male": """language variant
name svc_male
gender male
pitch 80 122
formant 1 96 97 100
formant 2 96 97 100
formant 3 96 103 100
formant 4 95 103 100
formant 5 95 103 100
""",
    "svc_female": """language variant
name svc_female
gender female
pitch 140 240
formant 0 105 80 150
formant 1 120 75 150 -50
formant 2 135 70 150 -250
formant 3 125 80 150
formant 4 125 80 150
formant 5 125 80 150
formant 6 120 70 150
formant 7 110 70 150
formant 8 110 70 150
stressAmp 18 18 20 20 20 20 20 20
""",
}
_STEADY = "flutter 0\necho 0 0\nroughness 0\nbreath 0 0 0 0 0 0 0 0\n"


def _data_home() -> Path:
    """A copy of the wheel's espeak-ng-data with our variants added (built once, atomically)."""
    source = Path(espeakng_loader.get_data_path())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "cosyvoice-service" / f"espeak-ng-{importlib.metadata.version('espeakng-loader')}-v1"
    if (home / "espeak-ng-data" / "voices" / "!v" / "svc_female").is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=home.parent, prefix=".espeak-"))
    shutil.copytree(source, staging / "espeak-ng-data")
    for name, text in _VARIANT_FILES.items():
        (staging / "espeak-ng-data" / "voices" / "!v" / name).write_text(text + _STEADY)
    try:
        os.rename(staging, home)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return home


class _Library:
    """libespeak-ng is one global state per process: one instance, one lock around every use."""

    _instance: "_Library | None" = None
    _instance_lock = threading.Lock()

    @classmethod
    def get(cls) -> "_Library":
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self):
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        home = _data_home()
        self.rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, str(home).encode(), 0)
        if self.rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {home}")
        self.lock = threading.Lock()
        self._lib = lib
        self._sink: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count, _events) -> int:
        if wav and count > 0:
            self._sink.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def has_voice(self, name: str) -> bool:
        with self.lock:
            return self._lib.espeak_SetVoiceByName(name.encode()) == 0

    def speak(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        data = text.encode("utf-8")
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            self._lib.espeak_SetParameter(_RATE, rate, 0)
            self._lib.espeak_SetParameter(_PITCH, pitch, 0)
            self._lib.espeak_SetParameter(_RANGE, pitch_range, 0)
            self._sink = []
            self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            pieces, self._sink = self._sink, []
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(pieces).astype(np.float32) / 32768.0


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
def _calibrate(lib: _Library) -> _Calibration:
    f0, spread_at_50 = {}, {}
    text = _CALIBRATION_TEXT["en-us"]
    for variant, name in _VARIANTS.items():
        grid = np.zeros((len(_RANGE_STEPS), len(_PITCH_STEPS)))
        for i, pitch_range in enumerate(_RANGE_STEPS):
            for j, pitch in enumerate(_PITCH_STEPS):
                audio = lib.speak(text, f"en-us+{name}", _DEFAULT_RATE, pitch, pitch_range)
                measured = prosody.measure(audio, lib.rate)
                grid[i, j] = measured.median_f0_hz
                if pitch == pitch_range == 50:
                    spread_at_50[variant] = max(measured.range_semitones, 0.5)
        f0[variant] = grid
    syllable_rate = {
        language: prosody.measure(
            lib.speak(sample, language, _DEFAULT_RATE, 50, 50), lib.rate, sample
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
        self._lib = _Library.get()
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
        rate = _DEFAULT_RATE
        if measured.syllables_per_second:
            reference = self._calibration.syllable_rate["cmn" if language_of(prompt_text) != "en-us" else "en-us"]
            rate = _DEFAULT_RATE * measured.syllables_per_second / reference
        return {
            "engine": self.name,
            "variant": variant,
            "pitch": int(round(pitch)),
            "range": int(np.clip(round(pitch_range), 0, 100)),
            "rate": int(np.clip(round(rate), _MIN_RATE, _MAX_RATE)),
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
        for key, low, high in (("pitch", 0, 100), ("range", 0, 100), ("rate", _MIN_RATE, _MAX_RATE)):
            value = profile.get(key)
            if type(value) is not int or not low <= value <= high:
                return f"{key} must be an integer from {low} to {high}"
        variant = profile.get("variant")
        if not isinstance(variant, str) or variant not in _VARIANTS:
            return f"variant must be one of {', '.join(_VARIANTS)}"
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
        rate = int(np.clip(settings["rate"] * request.speed * settings.get("speed", 1.0), _MIN_RATE, _MAX_RATE))
        voice = f"{language}+{_VARIANTS[settings['variant']]}"
        resampler = soxr.ResampleStream(self._lib.rate, self.sample_rate, 1, dtype="float32")
        for sentence in split_sentences(request.text):
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
        return builtin.language, {"variant": builtin.variant, "pitch": 50, "range": 50, "rate": _DEFAULT_RATE}


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
