"""The OpenAI door: POST /v1/audio/speech, GET /v1/models, and the custom voices of /v1/audio/voices."""

import base64
import json
import logging
import time

from fastapi import APIRouter, Request

from app.api.bodies import SafeBodyRoute
from app.api.deps import Config, Speech, caller_user
from app.api.errors import DoorError
from app.api.openai.errors import error_object
from app.api.openai.models import (
    OPENAI_MODELS,
    AudioModel,
    AudioModelList,
    ErrorResponse,
    Model,
    ModelList,
    SpeechBody,
)
from app.api.openai.voices import router as voices_router
from app.api.responses import AudioResponse
from app.core.audio_stream import AudioStream
from app.core.engine import Mode
from app.core.errors import ClientGone, DomainError, EngineFailure
from app.core.formats import FORMATS, AudioOutput, audio_format
from app.core.speech import SpeechRequest, SpeechService, VoiceRef

log = logging.getLogger(__name__)

_STARTED = int(time.time())
_ERRORS = {
    "4XX": {"model": ErrorResponse, "description": "a bad request: 400 names the param; 404 an unknown voice or model"},
    "5XX": {"model": ErrorResponse, "description": "the engine or the storage failed, or every slot stayed busy"},
}
_AUDIO = {
    200: {
        "description": "audio in the response_format, streamed while it is synthesized; or SSE events",
        "content": {**{f.media_type: {} for f in FORMATS.values()}, "text/event-stream": {}},
    }
}
# CosyVoice's speech tokens run at 25 per second of audio: usage.output_tokens counts them
TOKENS_PER_SECOND = 25

router = APIRouter(prefix="/v1", tags=["openai"], responses=_ERRORS, route_class=SafeBodyRoute)
router.include_router(voices_router)


def model_ids(speech: SpeechService) -> list[str]:
    return [speech.engine.name, *OPENAI_MODELS]


@router.get("/models")
async def list_models(speech: Speech) -> ModelList:
    """The engine this server runs, under its own name and OpenAI's speech model names."""
    return ModelList(data=[Model(id=i, created=_STARTED, owned_by="cosyvoice-service") for i in model_ids(speech)])


@router.get("/audio/models")
async def list_audio_models(speech: Speech) -> AudioModelList:
    """The same models in the shape Open WebUI reads (not part of OpenAI's API); needs no API key."""
    return AudioModelList(models=[AudioModel(id=i) for i in model_ids(speech)])


@router.post("/audio/speech", responses=_AUDIO)
async def create_speech(body: SpeechBody, speech: Speech, config: Config, http: Request) -> AudioResponse:
    """Speech for ``input`` in a built-in or cloned voice; with ``instructions``, the engine's instructed mode."""
    if body.model not in model_ids(speech):
        message = f"model: no model {body.model!r}; GET /v1/models lists {', '.join(model_ids(speech))}"
        raise DoorError(404, "model_not_found", message, "model")
    # OpenAI's voice names stand for voices of this server (COSYVOICE_OPENAI_VOICES), unless one has that name
    alias = config.openai_voices.get(body.voice_name, "")
    voice = VoiceRef(name=body.voice_name, alias=alias, user=caller_user(http))
    mode = Mode.INSTRUCT if body.instructions.strip() else Mode.SFT
    request = SpeechRequest(mode, body.input, voice, instruction=body.instructions, speed=body.speed)
    chosen = audio_format(body.response_format)
    output = AudioOutput(chosen, body.sample_rate)
    stream = await speech.synthesize(request, output, http.is_disconnected)
    if body.stream_format == "sse":
        return AudioResponse(stream, "text/event-stream", body=_events(stream, speech, len(body.input)))
    headers = {"Content-Disposition": f"attachment; filename=speech.{chosen.extension}"}
    return AudioResponse(stream, chosen.media_type, headers)


async def _events(stream: AudioStream, speech: SpeechService, characters: int):
    try:
        async for chunk in stream.chunks():
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
    except DomainError as exc:  # the status line has gone: the failure becomes the last event
        yield _event({"type": "error", "error": error_object(exc)})
        return
    except Exception:
        log.exception("synthesis failed after its first SSE event")
        failure = EngineFailure(None, "the engine failed; the server log has the details")
        yield _event({"type": "error", "error": error_object(failure)})
        return
    if stream.ended_early:  # nobody read the audio for too long: the stream was cut, say so rather than done
        yield _event({"type": "error", "error": error_object(ClientGone(None, "the stream was closed early"))})
        return
    output_tokens = round(stream.samples / speech.engine.sample_rate * TOKENS_PER_SECOND)
    usage = {"input_tokens": characters, "output_tokens": output_tokens, "total_tokens": characters + output_tokens}
    yield _event({"type": "speech.audio.done", "usage": usage})


def _event(data: dict) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()
