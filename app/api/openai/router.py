"""The OpenAI door: POST /v1/audio/speech, GET /v1/models, and the custom voices of /v1/audio/voices."""

import base64
import json
import time

from fastapi import APIRouter, Request

from app.api.errors import DoorError
from app.api.openai.models import OPENAI_MODELS, ErrorResponse, Model, ModelList, SpeechBody
from app.api.openai.voices import router as voices_router
from app.api.openai.voices import voice_name
from app.api.responses import AudioResponse
from app.api.seed.body import Speech
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SpeechRequest, SpeechService, VoiceRef
from app.core.synthesis import AudioStream
from app.engines.base import Mode

_STARTED = int(time.time())
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 413, 500, 503)}
_AUDIO = {
    200: {
        "description": "audio in the response_format, streamed while it is synthesized; or SSE events",
        "content": {**{f.media_type: {} for f in FORMATS.values()}, "text/event-stream": {}},
    }
}
# CosyVoice's speech tokens run at 25 per second of audio: usage.output_tokens counts them
TOKENS_PER_SECOND = 25

router = APIRouter(prefix="/v1", tags=["openai"], responses=_ERRORS)
router.include_router(voices_router)


def model_ids(speech: SpeechService) -> list[str]:
    return [speech.engine.name, *OPENAI_MODELS]


@router.get("/models")
async def list_models(speech: Speech) -> ModelList:
    """The engine this server runs, under its own name and OpenAI's speech model names."""
    return ModelList(data=[Model(id=i, created=_STARTED, owned_by="cosyvoice-service") for i in model_ids(speech)])


@router.post("/audio/speech", responses=_AUDIO)
async def create_speech(body: SpeechBody, speech: Speech, http: Request) -> AudioResponse:
    """Speech for ``input`` in a built-in or cloned voice; with ``instructions``, the engine's instructed mode."""
    if body.model not in model_ids(speech):
        message = f"model: no model {body.model!r}; GET /v1/models lists {', '.join(model_ids(speech))}"
        raise DoorError(404, "model_not_found", message, "model")
    name = await voice_name(speech, body.voice_name)
    mode = Mode.INSTRUCT if body.instructions.strip() else Mode.SFT
    request = SpeechRequest(mode, body.input, VoiceRef(name=name), instruction=body.instructions, speed=body.speed)
    audio_format = FORMATS[body.response_format]
    output = AudioOutput(audio_format, body.sample_rate, speech.settings.mp3_bitrate_kbps)
    stream = await speech.synthesize(request, output, http.is_disconnected)
    if body.stream_format == "sse":
        return AudioResponse(stream, "text/event-stream", body=_events(stream, speech, len(body.input)))
    headers = {"Content-Disposition": f"attachment; filename=speech.{audio_format.extension}"}
    return AudioResponse(stream, audio_format.media_type, headers)


async def _events(stream: AudioStream, speech: SpeechService, characters: int):
    async for chunk in stream.chunks():
        yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
    output_tokens = round(stream.samples / speech.engine.sample_rate * TOKENS_PER_SECOND)
    usage = {"input_tokens": characters, "output_tokens": output_tokens, "total_tokens": characters + output_tokens}
    yield _event({"type": "speech.audio.done", "usage": usage})


def _event(data: dict) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()
