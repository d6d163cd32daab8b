"""Upstream CosyVoice's runtime servers (``runtime/python/fastapi`` and ``runtime/python/grpc``): five kinds of
inference call, each one SpeechRequest. Shared by the HTTP and the gRPC door."""

from dataclasses import replace

from app.api.errors import DoorErrors
from app.core import errors
from app.core.engine import Mode
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SpeechRequest, VoiceRef
from app.core.voice_store import Upload

KINDS = {
    "sft": Mode.SFT,
    "zero_shot": Mode.ZERO_SHOT,
    "cross_lingual": Mode.CROSS_LINGUAL,
    "instruct": Mode.INSTRUCT,  # a stored speaker steered by an instruction
    "instruct2": Mode.INSTRUCT,  # prompt audio steered by an instruction
}

# core parameter -> upstream's field name
FIELDS = {
    "text": "tts_text",
    "voice": "spk_id",
    "name": "spk_id",
    "prompt_audio": "prompt_wav",
    "prompt_text": "prompt_text",
    "instruction": "instruct_text",
}

# raw little-endian int16 mono at the engine's rate, what upstream's servers send
PCM = AudioOutput(FORMATS["pcm"])

# how each kind of core error is answered: HTTP status, gRPC status code name
STATUS = {
    errors.Missing: (422, "INVALID_ARGUMENT"),
    errors.Invalid: (422, "INVALID_ARGUMENT"),
    errors.Unsupported: (400, "INVALID_ARGUMENT"),
    errors.NotFound: (404, "NOT_FOUND"),
    errors.AlreadyExists: (409, "ALREADY_EXISTS"),
    errors.Forbidden: (403, "PERMISSION_DENIED"),
    errors.TooLarge: (413, "INVALID_ARGUMENT"),
    errors.Unauthenticated: (401, "UNAUTHENTICATED"),
    errors.Busy: (429, "RESOURCE_EXHAUSTED"),
    errors.EngineFailure: (500, "INTERNAL"),
    errors.VoiceTableUnavailable: (503, "UNAVAILABLE"),
    errors.StorageFailure: (502, "UNAVAILABLE"),
    errors.StorageUnavailable: (503, "UNAVAILABLE"),
    errors.ClientGone: (499, "CANCELLED"),
}
HTTP_ERRORS = DoorErrors(STATUS, FIELDS, invalid=(422, "INVALID_ARGUMENT"), internal="INTERNAL")
_GRPC_FIELDS = {**FIELDS, "prompt_audio": "prompt_audio"}  # the proto's name for it
GRPC_ERRORS = DoorErrors(STATUS, _GRPC_FIELDS, invalid=(422, "INVALID_ARGUMENT"), internal="INTERNAL")


def speech_request(
    kind: str,
    tts_text: str,
    spk_id: str = "",
    prompt_text: str = "",
    prompt_audio: Upload | None = None,
    instruct_text: str = "",
) -> SpeechRequest:
    voice = VoiceRef(name=spk_id, prompt_audio=prompt_audio, prompt_text=prompt_text)
    return SpeechRequest(KINDS[kind], tts_text, voice, instruction=instruct_text)


def acting_for(request: SpeechRequest, user: str) -> SpeechRequest:
    """The request speaking for ``user`` (an API key's; "" without keys): upstream's calls name no user."""
    return replace(request, voice=replace(request.voice, user=user))
