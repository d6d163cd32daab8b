"""DashScope's voice enrollment (``dashscope.audio.tts_v2.VoiceEnrollmentService``): ``POST
/api/v1/services/audio/tts/customization`` with ``model`` "voice-enrollment" and an ``input.action``. The voices
are the same as /clone's and the OpenAI door's (the shared library); the voice id is the voice's name."""

import re
import secrets
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.bodies import SafeBodyRoute
from app.api.dashscope.errors import ERRORS
from app.api.deps import Speech, fetch_policy, user_for, voice_owner
from app.api.errors import DoorError, field_names
from app.core.fetch import fetch_audio
from app.core.names import VoiceName
from app.core.speech import SpeechService
from app.core.voice_store import Upload

router = APIRouter(prefix="/api/v1/services/audio/tts", tags=["dashscope"], route_class=SafeBodyRoute, responses=ERRORS)

PREFIX = re.compile(r"[a-z0-9]{1,10}")


class EnrollmentInput(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. max_prompt_audio_length, enable_preprocess

    action: Literal["create_voice", "list_voice", "query_voice", "update_voice", "delete_voice"]
    target_model: str = Field("", max_length=40, description="create_voice: the model the voice is for")
    prefix: str = Field("", max_length=10, description="create_voice: up to 10 lowercase letters or digits")
    url: str = Field("", max_length=30_000_000, description="the sample: a data: URL, or http(s) from an allowed host")
    prompt_text: str = Field("", description="the sample's transcript (an extension; without it, cross-lingual)")
    user_id: str = Field("", description="whose storage a url that is a storage key is in (an extension)")
    language_hints: list[str] = Field(default_factory=list, max_length=10)
    voice_id: str = ""
    page_index: int = Field(0, ge=0)
    page_size: int = Field(10, ge=1, le=1000)


class EnrollmentBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Literal["voice-enrollment"]
    input: EnrollmentInput
    parameters: dict = Field(default_factory=dict)


def _times(created: float | None) -> dict:
    """This service keeps one time per voice: when it was last saved."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created or 0))
    return {"gmt_create": stamp, "gmt_modified": stamp, "status": "OK"}


async def _described(speech: SpeechService, voice_id: VoiceName, owner: VoiceName | None) -> dict:
    await speech.voices.get(voice_id, owner, user_only=True)  # NotFound for a voice that is not there
    target_model = voice_id.rsplit("-", 2)[0] if voice_id.count("-") >= 2 else ""
    return {**_times(await speech.voices.created(voice_id, owner)), "target_model": target_model}


async def _sample(speech: SpeechService, request: EnrollmentInput, http: Request) -> Upload:
    """The sample ``url`` names: a data: URL, an http(s) URL the fetch policy allows, or a key in the caller's
    storage (the seed's uploads: ``prompts/ref.wav`` in ``input.user_id``'s folder or bucket prefix; with API
    keys, the key user's)."""
    url = _required(request.url, "url", request.action)
    if url.startswith("data:") or "://" in url or ":" in url.split("/", 1)[0]:
        return await fetch_audio(url, fetch_policy(http))
    user = user_for(http, request.user_id)
    if not user:
        raise DoorError(400, "InvalidParameter", "input.url: a storage key needs input.user_id (whose storage)")
    return await speech.voices.stored_prompt(VoiceName.check("user", user), url)


def _required(value: str, name: str, action: str) -> str:
    if not value.strip():
        raise DoorError(400, "InvalidParameter", f"input.{name}: {action} needs it")
    return value.strip()


@router.post("/customization")
async def customization(speech: Speech, body: EnrollmentBody, http: Request) -> dict:
    """create_voice, list_voice, query_voice, update_voice, delete_voice."""
    names = field_names(http)
    names.update({"voice": "input.voice_id", "name": "input.voice_id", "prompt_audio": "input.url"})
    names.update({"prompt_key": "input.url", "user": "input.user_id"})
    names["prompt_text"] = "input.prompt_text"
    request, action = body.input, body.input.action
    owner = voice_owner(http)  # with API keys the key user's own voices; without, the shared library
    output: dict = {}
    if action == "create_voice":
        names["voice"] = names["name"] = "input.prefix"
        _required(request.target_model, "target_model", action)
        if not PREFIX.fullmatch(request.prefix):
            problem = f"{request.prefix!r} is not 1 to 10 lowercase letters or digits"
            raise DoorError(400, "InvalidParameter", f"input.prefix: {problem}")
        voice_id = VoiceName.check("name", f"{request.target_model}-{request.prefix}-{secrets.token_hex(4)}")
        upload = await _sample(speech, request, http)
        await speech.voices.clone(voice_id, request.prompt_text.strip(), upload, overwrite=False, user=owner)
        output = {"voice_id": voice_id}
    elif action == "list_voice":
        marker = f"-{request.prefix}-" if request.prefix else ""
        chosen = [name for name in await speech.voices.names(owner) if marker in name]
        stamps = {name: await speech.voices.created(VoiceName(name), owner) for name in chosen}
        chosen.sort(key=lambda name: stamps[name] or 0, reverse=True)  # newest first
        page = chosen[request.page_index * request.page_size :][: request.page_size]
        output = {"voice_list": [{"voice_id": name, **_times(stamps[name])} for name in page]}
    else:
        voice_id = VoiceName.check("voice", _required(request.voice_id, "voice_id", action))
        if action == "query_voice":
            output = await _described(speech, voice_id, owner)
        elif action == "update_voice":
            await speech.voices.get(voice_id, owner, user_only=True)
            upload = await _sample(speech, request, http)
            await speech.voices.clone(voice_id, request.prompt_text.strip(), upload, overwrite=True, user=owner)
        else:
            await speech.voices.delete(voice_id, owner)
    return {"request_id": str(uuid.uuid4()), "output": output, "usage": {"count": 1}}
