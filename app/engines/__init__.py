"""Choose and build the speech engine named by the settings."""

import logging
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.core.engine import SpeechEngine
from app.core.observer import EngineObserver
from app.engines.model_dir import cosyvoice_generation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedEngine:
    engine: SpeechEngine
    voices_dir: Path  # where spk2info.pt and the voice sources live
    reason: str  # why this engine was chosen, for the log and /health


def load_engine(settings: Settings, observer: EngineObserver | None = None) -> LoadedEngine:
    choice = settings.engine
    if choice == "auto":
        if cosyvoice_generation(settings.model_dir) is not None:
            choice, reason = "cosyvoice", f"auto: found a CosyVoice model in {settings.model_dir}"
        else:
            choice, reason = "espeak", f"auto: no CosyVoice model in {settings.model_dir}, using embedded espeak-ng"
    else:
        reason = f"configured: COSYVOICE_ENGINE={choice}"
    log.info("speech engine: %s (%s)", choice, reason)
    if choice == "cosyvoice":
        from app.engines.cosyvoice import BatchOptions, CosyVoiceEngine, StreamOptions

        observing = {} if observer is None else {"observe": observer.engine_step}
        stream = StreamOptions(
            first_hop=settings.stream_first_hop,
            max_hop=settings.stream_max_hop,
            tail=settings.stream_tail,
            prompt_cache_bytes=int(settings.prompt_cache_mb * 2**20),
        )
        engine = CosyVoiceEngine(
            settings.model_dir,
            source=settings.src,
            fp16=settings.fp16,
            load_jit=settings.load_jit,
            load_trt=settings.load_trt,
            load_vllm=settings.load_vllm,
            text_frontend=settings.text_frontend,
            stream=stream,
            batch=BatchOptions(
                max_batch=settings.max_concurrency,
                batching=settings.batching,
                gather_wait=settings.gather_wait_ms / 1000,
                **observing,
            ),
        )
        return LoadedEngine(engine, settings.model_dir, reason)
    from app.engines.espeak import EspeakEngine

    return LoadedEngine(EspeakEngine(), settings.data_dir / "espeak", reason)
