"""The real CosyVoice engine: upstream's CosyVoice2 / CosyVoice3 behind one adapter."""

from app.engines.cosyvoice.engine import CosyVoiceEngine
from app.engines.cosyvoice.pipeline import BatchOptions, StreamOptions
from app.engines.cosyvoice.upstream import EngineStartError, import_upstream, model_generation

__all__ = [
    "BatchOptions",
    "CosyVoiceEngine",
    "EngineStartError",
    "StreamOptions",
    "import_upstream",
    "model_generation",
]
