"""The seed's /generate_audio: four modes by their Chinese names, `stream` as "True"/"False"."""

from fastapi import APIRouter, Request, Response

from app.api.deps import Speech
from app.api.errors import field_names
from app.api.openapi import documented_body
from app.api.responses import AudioResponse
from app.api.seed.body import Body
from app.api.seed.models import ERRORS, MODE_NAMES, GenerateBody
from app.api.seed.tts import MP3, speech_request
from app.core.engine import Mode
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import VoiceRef

router = APIRouter(tags=["seed: speech"], responses=ERRORS)

_UNSET_VOICE = ("", "无")  # the seed's spk_customize default
_DOC = documented_body(
    GenerateBody,
    {"prompt_audio": "prompt audio (any format PyAV reads), instead of prompt_audio_base64"},
    {"mode": {"type": "string", "enum": list(MODE_NAMES)}},
)
_AUDIO = {
    200: {
        "content": {"audio/mpeg": {}, "audio/wav": {}},
        "description": "MP3 streamed (stream true, the default), or one WAV (stream false)",
    }
}


@router.post("/generate_audio", response_model=None, openapi_extra=_DOC, responses=_AUDIO)
async def generate_audio(speech: Speech, body: Body, http: Request) -> Response:
    fields = body.parse(GenerateBody)
    names = field_names(http)
    custom = "" if fields.spk_customize.strip() in _UNSET_VOICE else fields.spk_customize.strip()
    if custom:
        names["voice"] = "spk_customize"  # the user's own voice file, instead of spk_id
    prompt_key = fields.prompt_speech_16k.strip()
    audio = await body.audio("prompt_audio")
    if audio is None and prompt_key:
        names["prompt_audio"] = "prompt_speech_16k"
    voice = VoiceRef(
        name=custom or fields.spk_id.strip(),
        user=fields.user_id.strip(),
        user_only=bool(custom),
        prompt_audio=audio,
        prompt_key=prompt_key,
        prompt_text=fields.prompt_text,
    )
    # the seed passes the instruction of 自然语言控制 in prompt_text
    instruction = fields.instruct_text or (fields.prompt_text if fields.mode is Mode.INSTRUCT else "")
    # 3s极速复刻 saves the voice it builds under exp_name
    save_as = fields.exp_name.strip() if fields.mode is Mode.ZERO_SHOT else ""
    request = speech_request(fields.mode, fields, voice, instruction, save_as=save_as)
    if fields.stream:
        stream = await speech.synthesize(request, MP3, http.is_disconnected)
        return AudioResponse(stream, "audio/mpeg", {"Content-Disposition": "inline; filename=sound.mp3"})
    stream = await speech.synthesize(request, AudioOutput(FORMATS["wav"], whole=True), http.is_disconnected)
    return Response(await stream.collect(), media_type="audio/wav")
