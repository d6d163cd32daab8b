"""Settings: the only place that reads the environment (prefix ``COSYVOICE_``)."""

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.names import name_problem  # the one name rule

# OpenAI's voice names -> voices of this server (built-in or cloned); COSYVOICE_OPENAI_VOICES (JSON) replaces it
DEFAULT_OPENAI_VOICES = {
    **dict.fromkeys(("alloy", "coral", "nova", "sage", "shimmer", "marin"), "英文女"),
    **dict.fromkeys(("ash", "ballad", "echo", "fable", "onyx", "verse", "cedar"), "英文男"),
}

# DashScope's CosyVoice voices (as in its documentation's examples) -> voices of this server
DEFAULT_DASHSCOPE_VOICES = {
    **dict.fromkeys(("longxiaochun", "longxiaochun_v2", "longwan", "longwan_v2", "longanhuan"), "中文女"),
    **dict.fromkeys(("longcheng", "longcheng_v2", "longanyang", "longshu", "longshu_v2"), "中文男"),
    **dict.fromkeys(("loongstella", "loongstella_v2", "loongbella", "loongbella_v2"), "英文女"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COSYVOICE_", env_file=".env", extra="ignore")

    engine: Literal["auto", "espeak", "cosyvoice"] = "auto"
    model_dir: Path = Path("pretrained_models/CosyVoice2-0.5B")
    data_dir: Path = Path("data")

    # CosyVoice engine: an upstream checkout to import instead of the installed package, and GPU options
    src: Path | None = None  # COSYVOICE_SRC
    fp16: bool = False
    load_jit: bool = False
    load_trt: bool = False
    load_vllm: bool = False
    text_frontend: bool = True  # upstream's text normalisation (numbers, symbols) before synthesis
    # CosyVoice streaming: speech tokens in the first chunk (a multiple of 25; each next chunk doubles, up to
    # the max), how the last chunk is made ("full": upstream's, over the whole sentence; "chunked": like the
    # others, bounded), and the memory for voices' prompts already run through the flow
    stream_first_hop: int = Field(25, ge=25)
    stream_max_hop: int = Field(100, ge=25)
    stream_tail: Literal["full", "chunked"] = "full"
    prompt_cache_mb: float = Field(2048.0, ge=0)

    max_upload_mb: float = Field(20.0, gt=0)
    max_buffered_mb: float = Field(100.0, gt=0)  # request bodies held at once, all requests together
    max_text_chars: int = Field(5000, ge=1)
    max_prompt_text_chars: int = Field(1000, ge=1)  # a transcript of 30 s of speech is a few hundred
    prompt_min_seconds: float = Field(1.0, gt=0)
    prompt_max_seconds: float = Field(30.0, gt=0)

    # slow clients: the deadline for a request's headers (app.server) and the longest gap in its body
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(120.0, gt=0)  # the whole body, from when the app first waits for it

    # API keys: a file of `KEY USER_ID` lines; with it, every request needs a key and acts for its user
    api_keys_file: Path | None = None

    max_concurrency: int = Field(4, ge=1)  # syntheses at once; with CosyVoice, its LLM's batch
    # CosyVoice: every request's LLM steps batched in one forward, flow and vocoder chunks handed in together
    # run as one pass (False: a thread per request, each chunk alone, as before)
    batching: bool = True
    gather_wait_ms: float = Field(5.0, ge=0, le=1000)  # the longest a flow or vocoder pass waits for others
    max_queued: int = Field(16, ge=0)  # requests waiting for a synthesis slot; beyond it, 429 at once
    queue_timeout_seconds: float = Field(30.0, gt=0)  # the longest wait for a slot (expected or real)
    stall_timeout_seconds: float = Field(60.0, gt=0)
    mp3_bitrate_kbps: Literal[32, 48, 64, 96, 128, 160, 192] = 64

    # Storage of users' voices and prompts: a local folder (default) or Alibaba Cloud OSS
    storage: Literal["local", "oss"] = "local"
    storage_dir: Path | None = None  # local storage; default: data_dir/storage
    oss_endpoint: str = ""  # e.g. https://oss-cn-beijing.aliyuncs.com
    oss_bucket: str = "learn-wave"
    oss_region: str = "cn-beijing"
    oss_prefix: str = ""  # a key prefix inside the bucket
    # credentials come from the environment only, under OSS's own names, and are never logged
    oss_access_key_id: SecretStr | None = Field(None, validation_alias="OSS_ACCESS_KEY_ID")
    oss_access_key_secret: SecretStr | None = Field(None, validation_alias="OSS_ACCESS_KEY_SECRET")
    storage_timeout_seconds: float = Field(10.0, gt=0)
    storage_retries: int = Field(2, ge=0, le=10)
    voice_cache_mb: float = Field(200.0, gt=0)

    openai_voices: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_OPENAI_VOICES))
    # DashScope's voice names -> voices of this server; COSYVOICE_DASHSCOPE_VOICES (JSON) replaces it
    dashscope_voices: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_DASHSCOPE_VOICES))
    dashscope_idle_seconds: float = Field(23.0, gt=0)  # DashScope's longest gap between a task's messages

    # voice enrollment's url: http(s) only from these hosts (JSON list), and only at public addresses unless
    # fetch_private (an intranet's file server); link-local addresses (cloud metadata) never
    fetch_hosts: list[str] = Field(default_factory=list)
    fetch_private: bool = False
    fetch_timeout_seconds: float = Field(10.0, gt=0)

    # browser pages on other origins that may call every HTTP door (app/api/cors.py): comma-separated origins,
    # "*" for any, "host:*" for any port, "" for none; by default pages served from this machine
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
    )

    # upstream CosyVoice's gRPC API (runtime/python/grpc): off unless a port is given
    grpc_port: int | None = Field(None, ge=1, le=65535)
    grpc_host: str = "127.0.0.1"

    # the Wyoming protocol (Home Assistant's voice pipelines): off unless a port is given. It has no keys of its
    # own: it lists and speaks the built-ins, the shared library (without API keys) and wyoming_user's voices
    wyoming_port: int | None = Field(None, ge=1, le=65535)
    wyoming_host: str = "127.0.0.1"
    wyoming_user: str = ""

    log_level: str = "INFO"

    @field_validator("openai_voices", "dashscope_voices")
    @classmethod
    def _voice_targets_are_names(cls, table: dict[str, str], info) -> dict[str, str]:
        for their_name, target in table.items():
            problem = name_problem(target)
            if problem:
                raise ValueError(f"COSYVOICE_{info.field_name.upper()}: {their_name!r} -> {target!r}: {problem}")
        return table

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value):
        if isinstance(value, str):
            value = [entry.strip().rstrip("/").lower() for entry in value.split(",") if entry.strip()]
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s*]+(:\*)?", origin):
                raise ValueError(
                    f"COSYVOICE_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port], "
                    "scheme://host:* for any port, or * alone)"
                )
        return value

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> "Settings":
        if self.max_buffered_mb < self.max_upload_mb:
            raise ValueError("COSYVOICE_MAX_BUFFERED_MB must be at least COSYVOICE_MAX_UPLOAD_MB")
        return self

    @field_validator("wyoming_user")
    @classmethod
    def _user_is_a_name(cls, user: str) -> str:
        if user and (problem := name_problem(user)):
            raise ValueError(f"COSYVOICE_WYOMING_USER: {problem}")
        return user

    @field_validator("src", "storage_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
