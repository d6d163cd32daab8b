"""The OpenAI door's request and response models (OpenAI's own field names and limits)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.fields import NotABool
from app.core.formats import FORMATS, SAMPLE_RATES

ResponseFormat = Literal[tuple(FORMATS)]  # type: ignore[valid-type]
# OpenAI's speech models: accepted as names of whatever engine this server runs
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")


class VoiceId(BaseModel):
    id: str = Field(min_length=1, description="a custom voice's id (from POST /v1/audio/voices)")


class SpeechBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="one of GET /v1/models")
    input: str = Field(min_length=1, max_length=4096, description="the text to speak")
    voice: str | VoiceId = Field(description="an OpenAI voice name (mapped), a built-in or cloned voice, or {id}")
    instructions: str = Field("", max_length=4096, description="how to speak; uses the engine's instructed mode")
    response_format: ResponseFormat = "mp3"
    speed: Annotated[float, NotABool] = Field(
        1.0, ge=0.25, le=4.0, description="beyond the engine's 0.5-2.0, time-stretched (pitch kept)"
    )
    stream_format: Literal["audio", "sse"] = "audio"
    sample_rate: Literal[SAMPLE_RATES] = Field(  # type: ignore[valid-type]
        24000, description="an extension to OpenAI's API, which always answers at 24 kHz"
    )

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Voice(BaseModel):
    id: str
    object: Literal["audio.voice"] = "audio.voice"
    created_at: int
    name: str
    type: Literal["audio_sample"] = "audio_sample"


class VoiceChoice(BaseModel):
    id: str = Field(description="what to send as `voice`")
    name: str


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Voice] = Field(description="the cloned voices, in OpenAI's shape")
    has_more: bool = False
    voices: list[VoiceChoice] = Field(
        description="every voice a request may name (OpenAI's names, the built-ins, the cloned), as Open WebUI reads"
    )


class AudioModel(BaseModel):
    id: str


class AudioModelList(BaseModel):
    models: list[AudioModel]


class VoiceDeleted(BaseModel):
    id: str
    object: Literal["audio.voice.deleted"] = "audio.voice.deleted"
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
