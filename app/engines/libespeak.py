"""libespeak-ng 1.52 (from the espeakng-loader wheel) through ctypes: one library per process, with our own steady
voice variants added to a copy of its data."""

import ctypes
import importlib.metadata
import os
import shutil
import tempfile
import threading
from pathlib import Path

import espeakng_loader
import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
DEFAULT_RATE = 175
MIN_RATE, MAX_RATE = 80, 450

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


# espeak's stock variants add pitch flutter, echo, breath and roughness whose state carries over from one
# utterance to the next, so the same text never sounds the same twice. Our own male and female variants
# leave those out: identical input gives identical audio.
VARIANTS = {
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


class Library:
    """libespeak-ng is one global state per process: one instance, one lock around every use."""

    _instance: "Library | None" = None
    _instance_lock = threading.Lock()

    @classmethod
    def get(cls) -> "Library":
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
