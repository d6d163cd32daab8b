"""Voice management: /clone, /upload_audio, /get_available_spks, and /voices/{spk_id}."""

import asyncio
import base64

from fastapi import APIRouter

from app.deps import Body, Speech
from app.errors import MissingField
from app.names import check_name
from app.schemas import CloneBody
from app.services.audio import decode_to_mono
from app.services.voices import Voice

router = APIRouter(tags=["voices"])


def _describe(speech, voice: Voice) -> dict:
    details = speech.engine.describe_voice(voice.profile) if voice.profile is not None else {}
    return {"spk_id": voice.spk_id, "builtin": voice.builtin, "engine": speech.engine.name, **details}


@router.post("/clone")
async def clone(speech: Speech, body: Body) -> dict:
    """Clone a voice from prompt audio (file `prompt_audio` or `prompt_audio_base64`) and save it."""
    fields = body.parse(CloneBody)
    check_name("spk_id", fields.spk_id)
    if not fields.prompt_text.strip():
        raise MissingField("prompt_text: must not be empty (the transcript of the prompt audio)")
    upload = await body.audio("prompt_audio")
    if upload is None:
        raise MissingField("prompt_audio: missing; send the prompt as a file part or as prompt_audio_base64")
    user_id = fields.user_id.strip()
    voice = await speech.clone(fields.spk_id, fields.prompt_text.strip(), upload, fields.overwrite, user_id)
    return {
        "status": "success",
        "message": f"voice {voice.spk_id!r} saved",
        "spk_id": voice.spk_id,
        "voice": _describe(speech, voice),
    }


@router.post("/upload_audio")
async def upload_audio(speech: Speech, body: Body) -> dict:
    """Return an audio file as base64, for the `prompt_audio_base64` fields of other endpoints."""
    upload = body.files.get("file")
    if upload is None:
        raise MissingField("file: missing; send the audio as a multipart file part named 'file'")
    await asyncio.to_thread(decode_to_mono, upload.data, "file", max_seconds=speech.settings.prompt_max_seconds)
    encoded = await asyncio.to_thread(base64.b64encode, upload.data)
    return {"filename": upload.filename, "audio_base64": encoded.decode()}


@router.get("/get_available_spks")
async def get_available_spks(speech: Speech, user_id: str = "") -> dict:
    """Built-in voices plus the shared cloned ones, or, with ``user_id``, plus that user's own."""
    builtin, cloned = await speech.list_voices(user_id.strip())
    return {"speakers": builtin + cloned, "builtin": builtin, "cloned": cloned}


@router.get("/voices/{spk_id}")
async def get_voice(speech: Speech, spk_id: str, user_id: str = "") -> dict:
    return _describe(speech, await speech.voice(spk_id, user_id.strip()))


@router.delete("/voices/{spk_id}")
async def delete_voice(speech: Speech, spk_id: str, user_id: str = "") -> dict:
    """Delete a cloned voice: the user's own with ``user_id``, else one of the shared library."""
    if user_id.strip():
        await speech.in_storage(speech.user_voices.delete, user_id.strip(), spk_id)
    else:
        await asyncio.to_thread(speech.voices.delete, spk_id)
    return {"status": "success", "message": f"voice {spk_id!r} deleted", "spk_id": spk_id}
