"""The DashScope door's request models: the CosyVoice WebSocket protocol's frames and synthesis parameters, with
DashScope's own field names, defaults and limits."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.fields import NotABool
from app.core.formats import SAMPLE_RATES

DEFAULT_RATE = 22050  # DashScope's, for format "Default" / sample_rate 0
# CJK ideographs (unified, extension A, compatibility, extensions B on): Chinese characters, kanji, hanja
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def billed_characters(text: str) -> int:
    """DashScope's count: Chinese characters (Japanese kanji, Korean hanja) count twice, anything else once."""
    return sum(2 if any(lo <= ord(ch) <= hi for lo, hi in CJK_RANGES) else 1 for ch in text)


class SynthesisParameters(BaseModel):
    """``payload.parameters`` of run-task (and ``input`` of the HTTP synthesizer)."""

    model_config = ConfigDict(extra="ignore")  # e.g. hot_fix, type, enable_ssml, word_timestamp_enabled

    voice: str = Field(min_length=1, max_length=200)
    format: Literal["pcm", "wav", "mp3", "opus", "Default", "default"] = "Default"
    sample_rate: Annotated[int, NotABool] = Field(0, description="0: 22050 Hz")
    volume: Annotated[int, NotABool] = Field(50, ge=0, le=100)
    rate: Annotated[float, NotABool] = Field(1.0, ge=0.5, le=2.0)
    pitch: Annotated[float, NotABool] = Field(1.0, ge=0.5, le=2.0)
    bit_rate: Annotated[int, NotABool] | None = Field(None, ge=6, le=256, description="kbps (libopus: 6-256)")
    seed: Annotated[int, NotABool] = Field(0, ge=0, le=2**31 - 1)
    instruction: str = Field("", max_length=1000)
    language_hints: list[str] = Field(default_factory=list, max_length=10)
    text_type: Literal["PlainText", "SSML"] = "PlainText"

    @field_validator("sample_rate")
    @classmethod
    def _known_rate(cls, rate: int) -> int:
        if rate != 0 and rate not in SAMPLE_RATES:
            raise ValueError(f"{rate} is not one of {', '.join(map(str, SAMPLE_RATES))}")
        return rate

    @property
    def format_name(self) -> str:
        return "mp3" if self.format.lower() == "default" else self.format

    @property
    def rate_hz(self) -> int:
        return self.sample_rate or DEFAULT_RATE


class Header(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["run-task", "continue-task", "finish-task"]
    task_id: str = Field(min_length=1, max_length=128)
    streaming: Literal["duplex"] = "duplex"


class RunPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    task_group: Literal["audio"] = "audio"
    task: Literal["tts"] = "tts"
    function: Literal["SpeechSynthesizer"] = "SpeechSynthesizer"
    parameters: SynthesisParameters


class TaskInput(BaseModel):
    """``payload.input`` of continue-task and finish-task."""

    model_config = ConfigDict(extra="ignore")

    text: str = ""
    flush: bool = False
    directive: Literal["", "cancel"] = ""


class TaskPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the SDK repeats model, task_group, task and function

    input: TaskInput = Field(default_factory=TaskInput)
