"""The engine registry: each engine's name -> whether it can run here (detect) and how it is made (build).

``auto`` takes the first engine, in the registry's order, that detects what it needs (CosyVoice: a model dir);
the embedded espeak engine always can, so a fresh machine with no weights still speaks.
"""

import logging
from collections.abc import Callable
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


@dataclass(frozen=True)
class EngineEntry:
    detect: Callable[[Settings], str | None]  # why the engine can run with these settings, or None
    build: Callable[[Settings, EngineObserver | None], tuple[SpeechEngine, Path]]  # the engine, its voices dir


def _detect_cosyvoice(settings: Settings) -> str | None:
    if cosyvoice_generation(settings.model_dir) is None:
        return None
    return f"found a CosyVoice model in {settings.model_dir}"


def _build_cosyvoice(settings: Settings, observer: EngineObserver | None) -> tuple[SpeechEngine, Path]:
    from app.engines.cosyvoice import BatchOptions, CosyVoiceEngine, StreamOptions

    observing = {} if observer is None else {"observe": observer.engine_step}
    stream = StreamOptions(
        first_hop=settings.stream_first_hop,
        max_hop=settings.stream_max_hop,
        tail=settings.stream_tail,
        prompt_cache_bytes=int(settings.prompt_cache_mb * 2**20),
    )
    batch = BatchOptions(
        max_batch=settings.max_concurrency,
        batching=settings.batching,
        gather_wait=settings.gather_wait_ms / 1000,
        **observing,
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
        batch=batch,
    )
    return engine, settings.model_dir


def _build_espeak(settings: Settings, observer: EngineObserver | None) -> tuple[SpeechEngine, Path]:
    from app.engines.espeak import EspeakEngine

    return EspeakEngine(), settings.data_dir / "espeak"


def _detect_espeak(settings: Settings) -> str:
    return f"no CosyVoice model in {settings.model_dir}, using embedded espeak-ng"  # it needs nothing


ENGINES: dict[str, EngineEntry] = {  # auto's order: the first that detects what it needs
    "cosyvoice": EngineEntry(_detect_cosyvoice, _build_cosyvoice),
    "espeak": EngineEntry(_detect_espeak, _build_espeak),
}


def load_engine(settings: Settings, observer: EngineObserver | None = None) -> LoadedEngine:
    choice = settings.engine
    if choice == "auto":
        choice, why = next((name, why) for name, entry in ENGINES.items() if (why := entry.detect(settings)))
        reason = f"auto: {why}"
    else:
        reason = f"configured: COSYVOICE_ENGINE={choice}"
    log.info("speech engine: %s (%s)", choice, reason)
    engine, voices_dir = ENGINES[choice].build(settings, observer)
    return LoadedEngine(engine, voices_dir, reason)
