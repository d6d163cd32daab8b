"""OpenAI's custom voices (/v1/audio/voices): the same voices, in the same store, as the seed's /clone."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from app.api.bodies import SafeBodyRoute
from app.api.deps import Config, Speech, anonymous, voice_owner
from app.api.errors import DoorError
from app.api.openai.models import Voice, VoiceChoice, VoiceDeleted, VoiceList
from app.core.names import VoiceName
from app.core.speech import SpeechService
from app.core.voice_store import Upload

router = APIRouter(prefix="/audio/voices", route_class=SafeBodyRoute)


async def _voice(speech: SpeechService, name: VoiceName, owner: VoiceName | None) -> Voice:
    created = await speech.voices.created(name, owner)
    return Voice(id=name, name=name, created_at=int(created or 0))


@router.post("")
async def create_voice(
    speech: Speech,
    http: Request,
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
    owner = voice_owner(http)
    await speech.voices.clone(voice_id, script_hint.strip(), upload, overwrite=False, user=owner)
    return await _voice(speech, voice_id, owner)


def choices(builtin: list[str], cloned: list[str], openai_voices: dict[str, str]) -> list[VoiceChoice]:
    """Every voice a request may name: OpenAI's names whose voice exists here, the built-ins, the cloned."""
    here = [*builtin, *cloned]
    mapped = [
        VoiceChoice(id=theirs, name=f"{theirs} ({ours})")
        for theirs, ours in openai_voices.items()
        if ours in here and theirs not in here
    ]
    return mapped + [VoiceChoice(id=name, name=name) for name in here]


@router.get("")
async def list_voices(speech: Speech, config: Config, http: Request) -> VoiceList:
    """The cloned voices in OpenAI's shape (``data``: with API keys, the key user's), and every voice a request may
    name in ``voices`` (Open WebUI's shape). Without a key on a server that uses keys: the built-ins only."""
    if anonymous(http):
        return VoiceList(data=[], voices=choices(speech.builtin_voices(), [], config.openai_voices))
    owner = voice_owner(http)
    builtin, cloned = await speech.available_voices(owner)
    data = [await _voice(speech, VoiceName(name), owner) for name in cloned]
    return VoiceList(data=data, voices=choices(builtin, cloned, config.openai_voices))


@router.delete("/{voice_id}")
async def delete_voice(speech: Speech, http: Request, voice_id: str) -> VoiceDeleted:
    await speech.voices.delete(VoiceName.check("voice", voice_id), voice_owner(http))
    return VoiceDeleted(id=voice_id)
