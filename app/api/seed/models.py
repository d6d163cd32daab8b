"""Request bodies shared by the routes; they parse JSON bodies and form fields alike."""

from typing import Annotated

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from app.api.fields import NotABool
from app.core.engine import Mode

# The seed's four mode names, plus English aliases.
MODE_NAMES = {
    "预训练音色": Mode.SFT,
    "3s极速复刻": Mode.ZERO_SHOT,
    "跨语种复刻": Mode.CROSS_LINGUAL,
    "自然语言控制": Mode.INSTRUCT,
    **{mode.value: mode for mode in Mode},
    "pretrained": Mode.SFT,
    "clone": Mode.ZERO_SHOT,
}


def _mode_named(value):
    if isinstance(value, str) and value.strip() in MODE_NAMES:
        return MODE_NAMES[value.strip()]
    raise ValueError(f"unknown mode {value!r}; use one of {', '.join(list(MODE_NAMES)[:4])} (or sft, zero_shot, ...)")


# a mode by any of its names (the web page's body takes them too)
ModeName = Annotated[Mode, BeforeValidator(_mode_named)]


class SeedErrorDetail(BaseModel):
    code: str
    message: str = Field(description="<field>: what is wrong")


class SeedError(BaseModel):
    error: SeedErrorDetail


ERRORS = {
    "4XX": {"model": SeedError, "description": "the request cannot be served as sent (docs/errors.md)"},
    "5XX": {"model": SeedError, "description": "the engine or the storage failed, or every slot stayed busy"},
}


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class SynthesisBody(Body):
    tts_text: str = Field(validation_alias=AliasChoices("tts_text", "text"))
    user_id: str = ""  # the user whose voices spk_id may name (storage namespace)
    speed: Annotated[float, NotABool] = Field(1.0, ge=0.5, le=2.0)
    seed: Annotated[int, NotABool] = Field(0, ge=0, le=2**32 - 1)
    # the engine's own streaming (CosyVoice): on by default, as the seed asks, so the first audio leaves
    # after the first few tokens instead of after the whole sentence; the response streams either way
    stream: bool = True


class TtsBody(SynthesisBody):
    spk_id: str


class PromptBody(SynthesisBody):
    spk_id: str = ""
    prompt_text: str = ""
    prompt_audio_base64: str | None = None


class InstructBody(SynthesisBody):
    instruct_text: str
    spk_id: str = ""  # a speaker, or prompt audio (file `prompt_audio` or base64) to steer
    prompt_audio_base64: str | None = None


class GenerateBody(SynthesisBody):
    """The seed's /generate_audio: JSON (as its Flask original read) or form fields."""

    mode: ModeName
    spk_id: str = ""
    prompt_text: str = ""
    instruct_text: str = ""
    prompt_audio_base64: str | None = None
    # The seed's storage fields (see SpeechSpec); their defaults mean "not used".
    spk_customize: str = "无"
    prompt_speech_16k: str = ""
    exp_name: str = ""


class CloneBody(Body):
    spk_id: str
    prompt_text: str
    prompt_audio_base64: str | None = None
    overwrite: bool = False
    user_id: str = ""  # save in this user's storage namespace instead of the shared library
