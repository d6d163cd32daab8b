"""Choose and build the speech engine named by the settings."""

import logging
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.services.engines.base import SpeechEngine

log = logging.getLogger(__name__)

_MODEL_CONFIGS = ("cosyvoice3.yaml", "cosyvoice2.yaml", "cosyvoice.yaml")


class EngineUnavailable(RuntimeError):
    """The configured engine cannot start; the message says what to do."""


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
    if choice == "cosyvoice":
        raise EngineUnavailable(
            f"the CosyVoice engine is not available in this build yet ({reason}); "
            "set COSYVOICE_ENGINE=espeak, or move the model dir aside to use the embedded engine"
        )
    from app.services.engines.espeak import EspeakEngine

    engine = EspeakEngine()
    log.info("speech engine: espeak (%s)", reason)
    return LoadedEngine(engine, settings.data_dir / "espeak", reason)
