"""The seed's voice management: /clone, /upload_audio, /get_available_spks, and /voices/{spk_id}."""

import asyncio
import base64

from fastapi import APIRouter, Request

from app.api.deps import Speech, voice_owner
from app.api.errors import field_names
from app.api.openapi import documented_body
from app.api.seed.body import Body, missing
from app.api.seed.models import ERRORS, CloneBody
from app.core.audio import PROMPT_RATE, decode_to_mono
from app.core.errors import Invalid
from app.core.names import VoiceName
from app.core.speech import SpeechService
from app.core.voices import Voice

router = APIRouter(tags=["seed: voices"], responses=ERRORS)


def describe(speech: SpeechService, voice: Voice) -> dict:
    details = speech.engine.describe_voice(voice.profile) if voice.profile is not None else {}
    return {"spk_id": voice.spk_id, "builtin": voice.builtin, "engine": speech.engine.name, **details}


@router.post(
    "/clone",
    openapi_extra=documented_body(CloneBody, {"prompt_audio": "the prompt audio (any format PyAV reads)"}),
)
async def clone(speech: Speech, body: Body, http: Request) -> dict:
    """Clone a voice from prompt audio (file `prompt_audio` or `prompt_audio_base64`) and save it."""
    fields = body.parse(CloneBody)
    name = VoiceName.check("name", fields.spk_id)
    if not fields.prompt_text.strip():
        raise missing("prompt_text", "must not be empty (the transcript of the prompt audio)")
    upload = await body.audio("prompt_audio")
    if upload is None:
        raise missing("prompt_audio", "missing; send the prompt as a file part or as prompt_audio_base64")
    user = voice_owner(http, fields.user_id)
    voice = await speech.voices.clone(name, fields.prompt_text.strip(), upload, fields.overwrite, user)
    return {
        "status": "success",
        "message": f"voice {voice.spk_id!r} saved",
        "spk_id": voice.spk_id,
        "voice": describe(speech, voice),
    }


@router.post(
    "/upload_audio",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_audio(speech: Speech, body: Body, http: Request) -> dict:
    """Return an audio file as base64, for the `prompt_audio_base64` fields of other endpoints."""
    upload = body.files.get("file")
    if upload is None:
        raise missing("file", "missing; send the audio as a multipart file part named 'file'")
    field_names(http)["prompt_audio"] = "file"
    limit = speech.limits.prompt_max_seconds
    samples = await asyncio.to_thread(decode_to_mono, upload.data, "prompt_audio", max_seconds=limit)
    if samples.size > limit * PROMPT_RATE:  # decoding stopped there: a small file can expand to hours
        raise Invalid("prompt_audio", f"the audio is longer than {limit:g} s; send a shorter prompt")
    encoded = await asyncio.to_thread(base64.b64encode, upload.data)
    return {"filename": upload.filename, "audio_base64": encoded.decode()}


@router.get("/get_available_spks")
async def get_available_spks(speech: Speech, http: Request, user_id: str = "") -> dict:
    """Built-in voices plus the shared cloned ones, or, with ``user_id``, plus that user's own."""
    builtin, cloned = await speech.available_voices(voice_owner(http, user_id))
    return {"speakers": builtin + cloned, "builtin": builtin, "cloned": cloned}


@router.get("/voices/{spk_id}")
async def get_voice(speech: Speech, http: Request, spk_id: str, user_id: str = "") -> dict:
    user = voice_owner(http, user_id)
    return describe(speech, await speech.voices.get(VoiceName.check("voice", spk_id), user))


@router.delete("/voices/{spk_id}")
async def delete_voice(speech: Speech, http: Request, spk_id: str, user_id: str = "") -> dict:
    """Delete a cloned voice: the user's own with ``user_id``, else one of the shared library."""
    user = voice_owner(http, user_id)
    await speech.voices.delete(VoiceName.check("voice", spk_id), user)
    return {"status": "success", "message": f"voice {spk_id!r} deleted", "spk_id": spk_id}
