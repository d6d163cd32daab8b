"""Upstream CosyVoice's runtime HTTP API (``runtime/python/fastapi/server.py``): /inference_* on GET and POST with
form fields (upstream's client sends GET with a multipart body), answered with raw int16 PCM as it is made."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.bodies import SafeBodyRoute
from app.api.deps import Speech, caller_user
from app.api.errors import answer
from app.api.responses import AudioResponse
from app.api.runtime.calls import HTTP_ERRORS, PCM, acting_for, speech_request
from app.core.speech import SpeechRequest, SpeechService
from app.core.voice_store import Upload

PREFIX = "/inference_"


class RuntimeApiError(BaseModel):
    """An error, as upstream's FastAPI server words its own."""

    detail: str = Field(description="<field>: <problem>")


_ERRORS = {
    "4XX": {"model": RuntimeApiError, "description": "a bad request; the detail names the field"},
    "5XX": {"model": RuntimeApiError, "description": "the engine failed, or every slot stayed busy"},
}
_PCM_ANSWER = {200: {"content": {"application/octet-stream": {}}, "description": "raw s16le mono PCM, streamed"}}
router = APIRouter(tags=["upstream runtime"], route_class=SafeBodyRoute, responses=_ERRORS)

Text = Annotated[str, Form(description="the text to speak")]
SpkId = Annotated[str, Form(description="a built-in or cloned voice (GET /get_available_spks lists them)")]
PromptText = Annotated[str, Form(description="the transcript of prompt_wav")]
Instruction = Annotated[str, Form(description="how to speak, e.g. 用开心的语气说")]
PromptWav = Annotated[UploadFile, File(description="prompt audio (any format PyAV reads; upstream's is 16 kHz WAV)")]


def render(exc: Exception, fields: dict[str, str]) -> JSONResponse:
    """Errors as upstream's FastAPI server words them: ``{"detail": message}``."""
    said = answer(exc, HTTP_ERRORS, fields)
    return JSONResponse({"detail": said.message}, status_code=said.status)


def _route(name: str):
    """POST documented; GET the same (upstream's client sends a GET with a body, which OpenAPI cannot show)."""

    def register(endpoint):
        router.add_api_route(PREFIX + name, endpoint, methods=["POST"], responses=_PCM_ANSWER)
        router.add_api_route(PREFIX + name, endpoint, methods=["GET"], include_in_schema=False)
        return endpoint

    return register


async def _pcm(speech: SpeechService, http: Request, request: SpeechRequest) -> AudioResponse:
    stream = await speech.synthesize(acting_for(request, caller_user(http)), PCM, http.is_disconnected)
    headers = {"X-Sample-Rate": str(speech.engine.sample_rate), "X-Sample-Format": "s16le", "X-Channels": "1"}
    return AudioResponse(stream, "application/octet-stream", headers)


async def _upload(file: UploadFile) -> Upload:
    return Upload(await file.read(), file.filename or "")


@_route("sft")
async def inference_sft(speech: Speech, http: Request, tts_text: Text, spk_id: SpkId) -> AudioResponse:
    """A built-in or cloned speaker."""
    return await _pcm(speech, http, speech_request("sft", tts_text, spk_id))


@_route("zero_shot")
async def inference_zero_shot(
    speech: Speech, http: Request, tts_text: Text, prompt_text: PromptText, prompt_wav: PromptWav
) -> AudioResponse:
    """The voice of prompt_wav, whose transcript is prompt_text."""
    prompt = await _upload(prompt_wav)
    return await _pcm(speech, http, speech_request("zero_shot", tts_text, prompt_text=prompt_text, prompt_audio=prompt))


@_route("cross_lingual")
async def inference_cross_lingual(
    speech: Speech, http: Request, tts_text: Text, prompt_wav: PromptWav
) -> AudioResponse:
    """The voice of prompt_wav speaking text in another language."""
    prompt = await _upload(prompt_wav)
    return await _pcm(speech, http, speech_request("cross_lingual", tts_text, prompt_audio=prompt))


@_route("instruct")
async def inference_instruct(
    speech: Speech, http: Request, tts_text: Text, spk_id: SpkId, instruct_text: Instruction
) -> AudioResponse:
    """A stored speaker, steered by an instruction."""
    return await _pcm(speech, http, speech_request("instruct", tts_text, spk_id, instruct_text=instruct_text))


@_route("instruct2")
async def inference_instruct2(
    speech: Speech, http: Request, tts_text: Text, instruct_text: Instruction, prompt_wav: PromptWav
) -> AudioResponse:
    """The voice of prompt_wav, steered by an instruction."""
    prompt = await _upload(prompt_wav)
    request = speech_request("instruct2", tts_text, prompt_audio=prompt, instruct_text=instruct_text)
    return await _pcm(speech, http, request)
