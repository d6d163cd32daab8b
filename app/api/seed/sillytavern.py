"""SillyTavern's "CosyVoice" TTS provider (its public/scripts/extensions/tts/cosyvoice.js), which speaks the API of
the CosyVoice_For_Windows integration the seed comes from: ``GET /speakers`` lists ``[{name, voice_id}]``, and
``POST /`` with ``{text, speaker, streaming}`` answers audio. The provider calls from the browser (so across
origins: COSYVOICE_CORS_ORIGINS) and sends no API key. Voices are the seed door's: built-ins and cloned."""

from fastapi import APIRouter, Request
from pydantic import Field

from app.api.deps import Speech, caller_user, voice_owner
from app.api.errors import field_names
from app.api.openapi import documented_body
from app.api.responses import AudioResponse
from app.api.seed.body import Body
from app.api.seed.models import ERRORS
from app.api.seed.models import Body as BodyFields
from app.core.engine import Mode
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SpeechRequest, VoiceRef

router = APIRouter(tags=["seed: SillyTavern"], responses=ERRORS)

_WAV = FORMATS["wav"]
_AUDIO = {200: {"content": {"audio/wav": {}}, "description": "WAV; streamed while it is synthesized with `streaming`"}}


class SpeakBody(BodyFields):
    text: str
    speaker: str = Field(description="a voice_id from GET /speakers")
    streaming: bool = Field(False, description="the provider sends 1: a WAV streamed as it is made")


@router.get("/speakers")
async def speakers(speech: Speech, http: Request) -> list[dict]:
    """The voices, as SillyTavern's CosyVoice provider lists them."""
    builtin, cloned = await speech.available_voices(voice_owner(http))
    return [{"name": name, "voice_id": name} for name in builtin + cloned]


@router.post("/", responses=_AUDIO, openapi_extra=documented_body(SpeakBody))
async def speak(speech: Speech, body: Body, http: Request) -> AudioResponse:
    """``text`` in the voice ``speaker``, as WAV: whole (exact sizes in its header) unless ``streaming``."""
    fields = body.parse(SpeakBody)
    field_names(http).update(text="text", voice="speaker")
    voice = VoiceRef(name=fields.speaker, user=caller_user(http))
    request = SpeechRequest(Mode.SFT, fields.text, voice, stream=fields.streaming)
    output = AudioOutput(_WAV, whole=not fields.streaming)
    stream = await speech.synthesize(request, output, http.is_disconnected)
    return AudioResponse(stream, _WAV.media_type)
