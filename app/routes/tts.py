"""The seed's synthesis endpoints: /tts, /tts/pcm, /tts/zero_shot (+ /tts/cross_lingual, /tts/instruct)."""

from fastapi import APIRouter, Request

from app.deps import Body, Speech
from app.schemas import InstructBody, PromptBody, TtsBody
from app.services.engines.base import Mode
from app.services.speech import SpeechService, SpeechSpec
from app.services.synthesis import AudioResponse

router = APIRouter(tags=["tts"])

_MP3_DOWNLOAD = {"Content-Disposition": "attachment; filename=tts.mp3"}


async def _mp3(speech: SpeechService, spec: SpeechSpec, request: Request) -> AudioResponse:
    return AudioResponse(await speech.stream(spec, "mp3", request.is_disconnected), "audio/mpeg", _MP3_DOWNLOAD)


def _common(fields) -> dict:
    return {
        "text": fields.tts_text,
        "speed": fields.speed,
        "seed": fields.seed,
        "stream": fields.stream,
        "user_id": fields.user_id.strip(),
    }


@router.post("/tts")
async def tts(speech: Speech, body: Body, request: Request) -> AudioResponse:
    """A built-in or cloned speaker, streamed as MP3 while it is synthesized."""
    fields = body.parse(TtsBody)
    return await _mp3(speech, SpeechSpec(Mode.SFT, spk_id=fields.spk_id, **_common(fields)), request)


@router.post("/tts/pcm")
async def tts_pcm(speech: Speech, body: Body, request: Request) -> AudioResponse:
    """Like /tts, as raw signed 16-bit little-endian mono PCM; the rate is in X-Sample-Rate."""
    fields = body.parse(TtsBody)
    spec = SpeechSpec(Mode.SFT, spk_id=fields.spk_id, **_common(fields))
    stream = await speech.stream(spec, "pcm", request.is_disconnected)
    headers = {
        "Content-Disposition": "attachment; filename=tts.pcm",
        "X-Sample-Rate": str(speech.engine.sample_rate),
        "X-Channels": "1",
        "X-Bit-Depth": "16",
        "X-Sample-Format": "s16le",
    }
    return AudioResponse(stream, "audio/L16", headers)  # the seed's media type; the bytes are little-endian


async def _prompted(mode: Mode, body, fields: PromptBody) -> SpeechSpec:
    return SpeechSpec(
        mode,
        spk_id=fields.spk_id,
        prompt_text=fields.prompt_text,
        prompt_audio=await body.audio("prompt_audio"),
        **_common(fields),
    )


@router.post("/tts/zero_shot")
async def tts_zero_shot(speech: Speech, body: Body, request: Request) -> AudioResponse:
    """3s极速复刻: prompt audio (`prompt_audio_base64` or file `prompt_audio`) + `prompt_text`, or a cloned `spk_id`."""
    return await _mp3(speech, await _prompted(Mode.ZERO_SHOT, body, body.parse(PromptBody)), request)


@router.post("/tts/cross_lingual")
async def tts_cross_lingual(speech: Speech, body: Body, request: Request) -> AudioResponse:
    """跨语种复刻: prompt audio or a cloned `spk_id`; the text may be in another language."""
    return await _mp3(speech, await _prompted(Mode.CROSS_LINGUAL, body, body.parse(PromptBody)), request)


@router.post("/tts/instruct")
async def tts_instruct(speech: Speech, body: Body, request: Request) -> AudioResponse:
    """自然语言控制: a speaker (`spk_id`) or prompt audio steered by `instruct_text`."""
    fields = body.parse(InstructBody)
    spec = SpeechSpec(
        Mode.INSTRUCT,
        spk_id=fields.spk_id,
        instruct_text=fields.instruct_text,
        prompt_audio=await body.audio("prompt_audio"),
        **_common(fields),
    )
    return await _mp3(speech, spec, request)
