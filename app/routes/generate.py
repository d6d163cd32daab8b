"""The seed's /generate_audio: four modes by their Chinese names, `stream` as "True"/"False"."""

from fastapi import APIRouter, Request, Response

from app.deps import Body, Speech
from app.errors import Unsupported
from app.schemas import GenerateBody
from app.services.engines.base import Mode
from app.services.speech import SpeechSpec
from app.services.synthesis import AudioResponse

router = APIRouter(tags=["generate"])

# Fields that keep users' voices and prompts in object storage; unset, they have these values.
_STORAGE_FIELDS = {"spk_customize": ("", "无"), "prompt_speech_16k": ("",), "user_id": ("",), "exp_name": ("",)}


@router.post("/generate_audio", response_model=None)
async def generate_audio(speech: Speech, body: Body, request: Request) -> Response:
    fields = body.parse(GenerateBody)
    for name, unset in _STORAGE_FIELDS.items():
        if getattr(fields, name).strip() not in unset:
            raise Unsupported(f"{name}: needs object storage (OSS), which this server does not have configured")
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
    )
    if fields.stream:
        stream = await speech.stream(spec, "mp3", request.is_disconnected)
        return AudioResponse(stream, "audio/mpeg", {"Content-Disposition": "inline; filename=sound.mp3"})
    return Response(await speech.render(spec, "wav", request.is_disconnected), media_type="audio/wav")
