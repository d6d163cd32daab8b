"""What the core refuses beyond: plain values, filled from the settings by whoever builds the core."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 5000
    max_prompt_text_chars: int = 1000
    prompt_min_seconds: float = 1.0
    prompt_max_seconds: float = 30.0
    storage_seconds: float = 10.0  # one storage call at its slowest (every try, and the backoff between)
