"""The seed's /generate_audio: four modes by their Chinese names, `stream` as "True"/"False"."""

from fastapi import APIRouter, Request, Response

from app.deps import Body, Speech
from app.schemas import GenerateBody
from app.services.engines.base import Mode
from app.services.speech import SpeechSpec
from app.services.synthesis import AudioResponse

router = APIRouter(tags=["generate"])

_UNSET_VOICE = ("", "无")  # the seed's spk_customize default


@router.post("/generate_audio", response_model=None)
async def generate_audio(speech: Speech, body: Body, request: Request) -> Response:
    fields = body.parse(GenerateBody)
    # The seed passes the instruction of 自然语言控制 in prompt_text.
    instruct = fields.instruct_text or (fields.prompt_text if fields.mode is Mode.INSTRUCT else "")
    spec = SpeechSpec(
        fields.mode,
        fields.tts_text,
        spk_id=fields.spk_id,
        prompt_text=fields.prompt_text,
        instruct_text=instruct,
        prompt_audio=await body.audio("prompt_audio"),
        speed=fields.speed,
        seed=fields.seed,
        stream=fields.stream,
        user_id=fields.user_id.strip(),
        custom_voice="" if fields.spk_customize.strip() in _UNSET_VOICE else fields.spk_customize.strip(),
        prompt_key=fields.prompt_speech_16k.strip(),
        save_as=fields.exp_name.strip() if fields.mode is Mode.ZERO_SHOT else "",
    )
    if fields.stream:
        stream = await speech.stream(spec, "mp3", request.is_disconnected)
        return AudioResponse(stream, "audio/mpeg", {"Content-Disposition": "inline; filename=sound.mp3"})
    return Response(await speech.render(spec, "wav", request.is_disconnected), media_type="audio/wav")
