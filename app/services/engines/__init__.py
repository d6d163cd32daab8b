"""Choose and build the speech engine named by the settings."""

import logging
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.services.engines.base import SpeechEngine

log = logging.getLogger(__name__)

_MODEL_CONFIGS = ("cosyvoice3.yaml", "cosyvoice2.yaml", "cosyvoice.yaml")


@dataclass(frozen=True)
class LoadedEngine:
    engine: SpeechEngine
    voices_dir: Path  # where spk2info.pt and the voice sources live
    reason: str  # why this engine was chosen, for the log and /health


def _has_model(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in _MODEL_CONFIGS)


def load_engine(settings: Settings) -> LoadedEngine:
    choice = settings.engine
    if choice == "auto":
        if _has_model(settings.model_dir):
            choice, reason = "cosyvoice", f"auto: found a CosyVoice model in {settings.model_dir}"
        else:
            choice, reason = "espeak", f"auto: no CosyVoice model in {settings.model_dir}, using embedded espeak-ng"
    else:
        reason = f"configured: COSYVOICE_ENGINE={choice}"
    log.info("speech engine: %s (%s)", choice, reason)
    if choice == "cosyvoice":
        from app.services.engines.cosyvoice import CosyVoiceEngine

        engine = CosyVoiceEngine(
            settings.model_dir,
            source=settings.src,
            fp16=settings.fp16,
            load_jit=settings.load_jit,
            load_trt=settings.load_trt,
            load_vllm=settings.load_vllm,
            text_frontend=settings.text_frontend,
        )
        return LoadedEngine(engine, settings.model_dir, reason)
    from app.services.engines.espeak import EspeakEngine

    return LoadedEngine(EspeakEngine(), settings.data_dir / "espeak", reason)
