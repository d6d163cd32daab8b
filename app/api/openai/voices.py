"""OpenAI's custom voices (/v1/audio/voices): the same voices, in the same store, as the seed's /clone."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.api.bodies import SafeBodyRoute
from app.api.deps import Speech
from app.api.errors import DoorError
from app.api.openai.models import Voice, VoiceDeleted, VoiceList
from app.core.names import VoiceName
from app.core.speech import SpeechService
from app.core.voice_store import Upload

router = APIRouter(prefix="/audio/voices", route_class=SafeBodyRoute)


async def _voice(speech: SpeechService, name: VoiceName) -> Voice:
    created = await speech.voices.created(name)
    return Voice(id=name, name=name, created_at=int(created or 0))


@router.post("")
async def create_voice(
    speech: Speech,
    name: Annotated[str, Form(description="the voice's name, which is also its id")],
    audio_sample: Annotated[UploadFile, File(description="the sample recording (any format PyAV reads)")],
    consent: Annotated[str, Form(description="accepted and not checked: this server keeps no consent records")] = "",
    script_hint: Annotated[str, Form(description="the sample's transcript; without one, cross-lingual cloning")] = "",
    type: Annotated[str, Form(description="only audio_sample")] = "audio_sample",
) -> Voice:
    """Clone a voice from an audio sample; it is then usable as ``voice`` here and as ``spk_id`` in the seed API."""
    if type != "audio_sample":
        raise DoorError(400, "unsupported_value", f"type: {type!r} is not offered; only audio_sample", "type")
    voice_id = VoiceName.check("name", name)
    upload = Upload(await audio_sample.read(), audio_sample.filename or "")
    await speech.voices.clone(voice_id, script_hint.strip(), upload, overwrite=False)
    return await _voice(speech, voice_id)


@router.get("")
async def list_voices(speech: Speech) -> VoiceList:
    """The cloned voices (OpenAI's voice names and the built-ins are not listed)."""
    return VoiceList(data=[await _voice(speech, VoiceName(name)) for name in await speech.voices.names()])


@router.delete("/{voice_id}")
async def delete_voice(speech: Speech, voice_id: str) -> VoiceDeleted:
    await speech.voices.delete(VoiceName.check("voice", voice_id))
    return VoiceDeleted(id=voice_id)
