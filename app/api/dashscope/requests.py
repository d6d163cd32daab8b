"""From DashScope's synthesis parameters to the core's SpeechRequest and AudioOutput, and the core's errors back
to DashScope's codes. Shared by the WebSocket and the HTTP synthesizer."""

import dataclasses

from app.api.dashscope.models import SynthesisParameters
from app.core import errors
from app.core.engine import Mode
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SpeechRequest, VoiceRef

OPUS_KBPS = 32  # DashScope's default for opus

# core parameter -> DashScope's field name
FIELDS = {
    "text": "text",
    "voice": "voice",
    "name": "voice",
    "instruction": "instruction",
    "speed": "rate",
    "seed": "seed",
    "format": "format",
    "prompt_audio": "url",
    "prompt_text": "prompt_text",
}

# how each core error is answered: HTTP status, DashScope's error code (the codes of the SDK's ErrorCode,
# dashscope/v2/errors.py: ServiceUnavailable is its 503)
STATUS = {
    errors.Missing: (400, "InvalidParameter"),
    errors.Invalid: (400, "InvalidParameter"),
    errors.Unsupported: (400, "InvalidParameter"),
    errors.NotFound: (404, "InvalidParameter"),
    errors.AlreadyExists: (409, "InvalidParameter"),
    errors.Forbidden: (403, "AccessDenied"),
    errors.TooLarge: (413, "InvalidParameter"),
    errors.Unauthenticated: (401, "InvalidApiKey"),
    errors.Busy: (429, "Throttling"),
    errors.EngineFailure: (500, "InternalError"),
    errors.VoiceTableUnavailable: (503, "ServiceUnavailable"),
    errors.StorageFailure: (502, "InternalError"),  # the storage refused us (its credentials): ours to fix
    errors.StorageUnavailable: (503, "ServiceUnavailable"),
    errors.ClientGone: (499, "RequestCancelled"),
}


def speech_request(params: SynthesisParameters, user: str, voices: dict[str, str], text: str = "") -> SpeechRequest:
    """``user``: the API key's user ("" without keys), whose voices the request may name beside the built-ins;
    ``voices``: DashScope's voice names -> this server's (COSYVOICE_DASHSCOPE_VOICES)."""
    instruction = params.instruction.strip()
    if params.text_type == "SSML":
        raise errors.Unsupported(None, "text_type: SSML is not supported by this server; send PlainText")
    voice = VoiceRef(name=params.voice, alias=voices.get(params.voice, ""), user=user)
    mode = Mode.INSTRUCT if instruction else Mode.SFT
    return SpeechRequest(mode, text, voice, instruction=instruction, speed=params.rate, seed=params.seed)


def task_output(params: SynthesisParameters, whole: bool = False) -> AudioOutput:
    # bit_rate is opus's only; the other compressed formats take the service's bitrate
    kbps = (params.bit_rate or OPUS_KBPS) if params.format_name == "opus" else None
    output = AudioOutput(FORMATS[params.format_name], params.rate_hz, kbps, whole)
    return dataclasses.replace(output, gain=params.volume / 50, pitch=params.pitch)
