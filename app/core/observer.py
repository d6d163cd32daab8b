"""What the core reports as it works, for whoever watches it (the /metrics door): a protocol and a no-op."""

from dataclasses import dataclass
from typing import Protocol

from app.core.errors import DomainError


@dataclass(frozen=True)
class StreamRecord:
    """What one finished stream did."""

    outcome: str  # completed, cancelled or failed
    first_chunk_seconds: float | None  # from the start of synthesis to the engine's first chunk
    first_chunk_samples: int
    samples: int
    seconds: float  # from the start of synthesis to its end
    audio_seconds: float


class EngineObserver(Protocol):
    def engine_step(self, kind: str, size: int, seconds: float) -> None:
        """One step of an engine's batched stage: ``decode`` (size: the batch), ``prefill`` (positions),
        ``flow`` or ``vocoder`` (the streams whose chunks ran in one token-to-wave pass)."""


class Observer(Protocol):
    def stream_ended(self, record: StreamRecord) -> None: ...

    def rejected(self, reason: str) -> None:
        """A request refused for load: queue_full, wait_too_long or timeout (the core's), or a door's reason."""

    def storage_failed(self, error: DomainError) -> None: ...


class Unobserved:
    def stream_ended(self, record: StreamRecord) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def storage_failed(self, error: DomainError) -> None:
        pass
