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

    engine: Literal["auto", "espeak", "cosyvoice"] = Field(
        "auto",
        description="Which engine speaks: `auto` picks `cosyvoice` when `COSYVOICE_MODEL_DIR` holds a CosyVoice "
        "model (`cosyvoice2.yaml`, `cosyvoice3.yaml` or `cosyvoice.yaml`) and the embedded `espeak` otherwise; "
        "`/health` says which one runs and why.",
    )
    model_dir: Path = Field(
        Path("pretrained_models/CosyVoice2-0.5B"),
        description="The CosyVoice model dir; its `spk2info.pt` holds that engine's voices (a missing dir with "
        "`COSYVOICE_ENGINE=cosyvoice` is a start-up error naming the path).",
    )
    data_dir: Path = Field(
        Path("data"),
        description="The service's own data: the embedded engine's voices (`espeak/spk2info.pt`), the download "
        "cache (`cache/downloads`) and, by default, the local storage (`storage`).",
    )

    # CosyVoice engine: the upstream code it imports, and upstream's GPU options
    src: Path | None = Field(
        None,
        description="An upstream CosyVoice checkout to import instead of the installed package (`make` passes "
        "the checkout `make install-cosyvoice` chose); empty is unset.",
    )
    fp16: bool = Field(
        False,
        description="Passed to upstream's constructor (GPU only): LLM and flow in half precision; the service's "
        "loop runs them (and CosyVoice3's vocoder) under autocast.",
    )
    load_jit: bool = Field(
        False,
        description="Passed to upstream's constructor (GPU only): CosyVoice2's TorchScript flow encoder; "
        "CosyVoice3 does not take it.",
    )
    load_trt: bool = Field(
        False,
        description="Passed to upstream's constructor (GPU only): a TensorRT flow estimator (CosyVoice2) or DiT "
        "estimator (CosyVoice3), built from the model dir's ONNX file on the first start.",
    )
    load_vllm: bool = Field(
        False,
        description="Passed to upstream's constructor (GPU only, the `vllm` package installed): vLLM runs the "
        "LLM instead of the service's scheduler (vLLM's own sampling; seeds do not apply).",
    )
    text_frontend: bool = Field(True, description="Upstream's text normalisation (numbers, symbols) before synthesis.")
    # CosyVoice streaming: the chunk schedule, the last chunk, and the memory for voices' prompts
    stream_first_hop: int = Field(
        25,
        ge=25,
        description="Speech tokens in the first streamed chunk; each next chunk doubles up to "
        "`COSYVOICE_STREAM_MAX_HOP`. A multiple of the model's 25-token chunk.",
    )
    stream_max_hop: int = Field(
        100, ge=25, description="Speech tokens in the largest streamed chunk; a multiple of 25."
    )
    stream_tail: Literal["full", "chunked"] = Field(
        "full",
        description="How the last chunk is made: `full` as upstream (its non-streaming flow over the whole "
        "sentence), `chunked` like the others (bounded; differs from upstream's in that chunk).",
    )
    prompt_cache_mb: float = Field(
        2048.0,
        ge=0,
        description="Memory for voices' prompts already run through the flow (least recently used dropped "
        "first; 0 keeps none, and every stream runs its prompt).",
    )

    max_upload_mb: float = Field(20.0, gt=0, description="The largest request body; refused with 413 while it arrives.")
    max_buffered_mb: float = Field(
        100.0,
        gt=0,
        description="Request bodies held at once by all requests together; the body that would pass it gets "
        "503 `busy`. At least `COSYVOICE_MAX_UPLOAD_MB`.",
    )
    max_text_chars: int = Field(5000, ge=1, description="The longest text to speak (`tts_text`).")
    max_prompt_text_chars: int = Field(
        1000,
        ge=1,
        description="The longest transcript of a prompt (`prompt_text`, `script_hint`); a transcript of 30 s "
        "of speech is a few hundred characters.",
    )
    prompt_min_seconds: float = Field(
        1.0, gt=0, description="The shortest prompt: seconds of sound after trimming silence."
    )
    prompt_max_seconds: float = Field(30.0, gt=0, description="The longest prompt: seconds of sound.")

    # slow clients
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection that has not sent a whole request line and headers by then is closed "
        "(slowloris; served by `python -m app.server`, as `make run` and the container do).",
    )
    body_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="A request body must have arrived whole this long after the app first waits for it; then "
        "408, and the connection closes.",
    )

    api_keys_file: Path | None = Field(
        None,
        description="A file of `KEY USER_ID` lines: with it, every request needs a key and acts for its user; "
        "unset: keys are off.",
    )

    max_concurrency: int = Field(
        4,
        ge=1,
        description="Syntheses (and voice builds) running at once, each in its own worker thread; for the "
        "CosyVoice engine also its LLM's batch.",
    )
    batching: bool = Field(
        True,
        description="CosyVoice: every request's LLM decode stepped in one batched forward, and flow and vocoder "
        "chunks handed in together run as one pass; `false`: a thread per request stepping alone, each chunk "
        "alone (same tokens and audio).",
    )
    gather_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="CosyVoice: the longest a flow or vocoder pass waits for other streams' chunks (it never "
        "waits once every stream in the stage has handed one in, nor for a stream alone).",
    )
    max_queued: int = Field(
        16, ge=0, description="Requests that may wait for a synthesis slot; beyond them, 429 at once."
    )
    queue_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="The longest wait for a slot, expected (by the drain rate: refused at once) or real; then 429.",
    )
    stall_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="A stream whose client stays connected but reads nothing for this long is closed, freeing "
        "its slot.",
    )
    mp3_bitrate_kbps: Literal[32, 48, 64, 96, 128, 160, 192] = Field(
        64,
        description="The MP3 bitrate on every door, in kbps; also opus' and AAC's on the doors whose requests "
        "name no bitrate (DashScope's opus has its own bit_rate, 32 by default).",
    )

    # Storage of users' voices and prompts: a local folder (default) or Alibaba Cloud OSS
    storage: Literal["local", "oss"] = Field(
        "local", description="Where per-user voices and prompts live: a local folder or Alibaba Cloud OSS."
    )
    storage_dir: Path | None = Field(
        None, description="The local storage folder; unset (or empty): `COSYVOICE_DATA_DIR`/storage."
    )
    oss_endpoint: str = Field("", description="The OSS endpoint, e.g. `https://oss-cn-beijing.aliyuncs.com`.")
    oss_bucket: str = Field("learn-wave", description="The OSS bucket.")
    oss_region: str = Field("cn-beijing", description="The bucket's region (signature V4 needs it).")
    oss_prefix: str = Field("", description="A key prefix inside the bucket (optional).")
    oss_access_key_id: SecretStr | None = Field(
        None,
        validation_alias="OSS_ACCESS_KEY_ID",
        description="The OSS access key id: from the environment only, under OSS's own name; never logged.",
    )
    oss_access_key_secret: SecretStr | None = Field(
        None,
        validation_alias="OSS_ACCESS_KEY_SECRET",
        description="The OSS access key secret: from the environment only, under OSS's own name; never logged.",
    )
    storage_timeout_seconds: float = Field(
        3.0,
        gt=0,
        description="The timeout of each storage request. A request stops waiting for a read of a user's storage "
        "after twice its tries times this, plus their backoff (3 s, 1 retry: 12.4 s); writes are not abandoned.",
    )
    storage_retries: int = Field(
        1,
        ge=0,
        le=10,
        description="Retries of a storage request, with exponential backoff, on 5xx answers and timeouts.",
    )
    voice_cache_mb: float = Field(
        200.0,
        gt=0,
        description="The local cache of downloaded voices and prompts (by key and ETag; least recently used "
        "out first).",
    )

    openai_voices: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_OPENAI_VOICES),
        description="OpenAI voice name (any string a client sends as `voice`) -> a voice of this "
        "server (built-in or cloned; names checked at start-up). It replaces the default.",
    )
    dashscope_voices: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_DASHSCOPE_VOICES),
        description="DashScope voice name -> a voice of this server (names checked at start-up). "
        "It replaces the default.",
    )
    dashscope_idle_seconds: float = Field(
        23.0,
        gt=0,
        description="A DashScope WebSocket task whose client sends nothing for this long while the service "
        "waits for its text fails (`RequestTimeOut`).",
    )

    # voice enrollment's url: link-local addresses (cloud metadata) are never fetched
    fetch_hosts: list[str] = Field(
        default_factory=list,
        description="JSON list of hosts whose http(s) URLs voice enrollment fetches (none: only `data:` URLs).",
    )
    fetch_private: bool = Field(
        False,
        description="Let those hosts be at private or loopback addresses (an intranet's file server); "
        "link-local never.",
    )
    fetch_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="The whole fetch of one URL; its size is bounded by `COSYVOICE_MAX_UPLOAD_MB`.",
    )

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"],
        description="Browser pages on other origins that may call every HTTP door (app/api/cors.py): "
        "comma-separated origins `scheme://host[:port]`, `scheme://host:*` for any port, `*` alone for any "
        "origin, empty for none; by default pages served from this machine.",
    )

    # upstream CosyVoice's gRPC API (runtime/python/grpc)
    grpc_port: int | None = Field(
        None, ge=1, le=65535, description="The port of upstream's gRPC API; off unless a port is given."
    )
    grpc_host: str = Field("127.0.0.1", description="The address the gRPC API listens on.")

    # the Wyoming protocol (Home Assistant's voice pipelines)
    wyoming_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The port of the Wyoming door (Home Assistant); off unless a port is given. It has no keys "
        "of its own.",
    )
    wyoming_host: str = Field("127.0.0.1", description="The address the Wyoming door listens on.")
    wyoming_user: str = Field(
        "",
        description="The user whose cloned voices the Wyoming door lists and speaks, besides the built-ins (and, "
        "without API keys, the shared library).",
    )

    log_level: str = Field("INFO", description="The log level (`DEBUG`, `INFO`, `WARNING`, ...).")

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
