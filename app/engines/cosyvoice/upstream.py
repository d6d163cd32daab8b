"""Finding and importing upstream CosyVoice, and what the service changes at run time (never on disk).

Upstream comes from a checkout (``COSYVOICE_SRC``, the pinned commit) or from the installed
``cosyvoice2-fr-infer`` wheel (June 2025, CosyVoice2 only). Importing it is made safe here:

- upstream configures the root logger (DEBUG) when imported: the service's logging is restored;
- the fr-infer frontend imports WeTextProcessing's ``tn`` (pynini, ~670 MB) unless ``ttsfrd`` is present:
  when neither is installed, the same two normaliser classes are offered, backed by ``wetext``;
- the current frontend reads prompt audio with ``load_wav`` (``torchaudio.load``, which needs TorchCodec
  and FFmpeg): it is replaced by one that takes the service's already decoded prompt.
"""

import logging
import sys
import types
from pathlib import Path

import numpy as np
import soxr
import torch

from app.core.audio import PROMPT_RATE, WIDE_RATE, PromptAudio
from app.engines.model_dir import cosyvoice_generation

GET_WEIGHTS = (
    "download a model on a machine with internet access (pretrained_models/README.md says how) "
    "and copy it there, or point COSYVOICE_MODEL_DIR at it"
)
GET_UPSTREAM = (
    "run `make install-cosyvoice` (it fetches the pinned FunAudioLLM/CosyVoice commit) "
    "or set COSYVOICE_SRC to a checkout of it"
)


class EngineStartError(RuntimeError):
    """The CosyVoice engine cannot start; the message says what to do."""


def model_generation(model_dir: Path) -> int:
    generation = cosyvoice_generation(model_dir)
    if generation == 1:
        raise EngineStartError(f"{model_dir} holds a CosyVoice-300M model; this service runs CosyVoice2 and 3")
    if generation is None:
        raise EngineStartError(
            f"no CosyVoice model in {model_dir} (no cosyvoice2.yaml or cosyvoice3.yaml); {GET_WEIGHTS}"
        )
    return generation


class PromptWav:
    """Prompt audio the service has decoded, handed to upstream where it wants a path to read."""

    def __init__(self, prompt: PromptAudio):
        self._by_rate = {PROMPT_RATE: prompt.samples, WIDE_RATE: prompt.wideband}

    def at(self, rate: int) -> torch.Tensor:
        samples = self._by_rate.get(rate)
        if samples is None:
            samples = soxr.resample(self._by_rate[WIDE_RATE], WIDE_RATE, rate)
        return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]


def load_wav(wav, target_sr: int, min_sr: int = 16000) -> torch.Tensor:
    """Upstream's ``load_wav(wav, target_sr)`` for the prompts the adapter hands over: no audio file I/O."""
    if not isinstance(wav, PromptWav):
        raise TypeError(f"the service hands upstream decoded prompts only, not {type(wav).__name__}")
    return wav.at(target_sr)


class _WetextNormalizer:
    """WeTextProcessing's ``tn`` normaliser interface, backed by the small ``wetext`` runtime."""

    language = "zh"

    def __init__(self, remove_erhua: bool = False, full_to_half: bool = False, **_ignored):
        from wetext import Normalizer

        options = {"remove_erhua": remove_erhua, "full_to_half": full_to_half} if self.language == "zh" else {}
        self._normalizer = Normalizer(lang=self.language, operator="tn", **options)

    def normalize(self, text: str) -> str:
        return self._normalizer.normalize(text)


class _EnglishWetextNormalizer(_WetextNormalizer):
    language = "en"


def _provide_text_normalisers() -> None:
    """Offer ``tn.chinese.normalizer`` / ``tn.english.normalizer`` in ``sys.modules`` when not installed."""
    for name in ("ttsfrd", "tn.chinese.normalizer"):
        try:
            __import__(name)
            return
        except ImportError:
            pass
    modules = {name: types.ModuleType(name) for name in ("tn", "tn.chinese", "tn.english")}
    modules["tn.chinese.normalizer"] = types.ModuleType("tn.chinese.normalizer")
    modules["tn.english.normalizer"] = types.ModuleType("tn.english.normalizer")
    for package in ("tn", "tn.chinese", "tn.english"):
        modules[package].__path__ = []
    modules["tn.chinese.normalizer"].Normalizer = _WetextNormalizer
    modules["tn.english.normalizer"].Normalizer = _EnglishWetextNormalizer
    sys.modules.update(modules)


def import_upstream(source: Path | None):
    """Upstream's ``cosyvoice.cli.cosyvoice`` module and ``set_all_random_seed``, ready to use.

    ``source`` (COSYVOICE_SRC) goes first on the import path, ahead of an installed ``cosyvoice``.
    """
    if source is not None:
        if not (source / "cosyvoice" / "cli" / "cosyvoice.py").is_file():
            raise EngineStartError(
                f"COSYVOICE_SRC={source} is not a CosyVoice checkout (no cosyvoice/cli/cosyvoice.py)"
            )
        for path in (source / "third_party" / "Matcha-TTS", source):
            if path.is_dir() and str(path) not in sys.path:
                sys.path.insert(0, str(path))
    _provide_text_normalisers()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import cosyvoice.cli.cosyvoice as upstream
        import cosyvoice.cli.frontend as frontend
        from cosyvoice.utils import file_utils
        from cosyvoice.utils.common import set_all_random_seed
    except ImportError as exc:
        raise EngineStartError(f"the upstream CosyVoice code is not importable ({exc}); {GET_UPSTREAM}") from exc
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    if source is not None and not Path(upstream.__file__).resolve().is_relative_to(source.resolve()):
        raise EngineStartError(
            f"COSYVOICE_SRC={source} is set, but `cosyvoice` was already imported from {upstream.__file__}"
        )
    for module in (frontend, file_utils):
        if hasattr(module, "load_wav"):
            module.load_wav = load_wav
    return upstream, set_all_random_seed
