"""The engine protocol the core drives, and what a request to it holds. Engines know nothing of HTTP, storage
or users; they implement this and import it, never the reverse."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from app.core.audio import PromptAudio


class Mode(StrEnum):
    SFT = "sft"  # 预训练音色: a built-in (or saved) speaker
    ZERO_SHOT = "zero_shot"  # 3s极速复刻: clone from a prompt with its transcript
    CROSS_LINGUAL = "cross_lingual"  # 跨语种复刻: clone from a prompt, text in another language
    INSTRUCT = "instruct"  # 自然语言控制: a speaker steered by an instruction


MODE_LABELS = {
    Mode.SFT: "预训练音色",
    Mode.ZERO_SHOT: "3s极速复刻",
    Mode.CROSS_LINGUAL: "跨语种复刻",
    Mode.INSTRUCT: "自然语言控制",
}


@dataclass(frozen=True)
class SynthesisRequest:
    mode: Mode
    text: str
    speaker: str | None = None  # a built-in speaker id
    voice: dict | None = None  # a voice profile made by make_voice (cloned or ad hoc)
    instruct_text: str = ""
    speed: float = 1.0
    seed: int = 0
    stream: bool = True
    cancelled: threading.Event | None = None  # set when nobody wants the audio any more (the client left)


class VoiceRejected(ValueError):
    """The prompt cannot make a voice (the message says why)."""


class SpeechEngine(Protocol):
    name: str
    description: str  # which model and code, for /health and the log
    sample_rate: int
    capabilities: frozenset[Mode]

    def builtin_speakers(self) -> list[str]: ...

    def voice_languages(self, speaker: str | None) -> list[str]:
        """The languages (ISO 639 codes) a built-in speaker, or with None a cloned voice, speaks well."""

    def make_voice(self, prompt_text: str, prompt: PromptAudio) -> dict:
        """Build a voice profile (persisted in spk2info.pt) from a prepared prompt."""

    def voice_problem(self, profile: object) -> str | None:
        """Why a stored profile cannot be used by this engine, or None when it can."""

    def describe_voice(self, profile: dict) -> dict:
        """A JSON-able summary of a profile for API responses."""

    def synthesize(self, request: SynthesisRequest) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks at ``sample_rate`` as soon as each is ready."""
