"""The seed's synthesis endpoints: /tts, /tts/pcm, /tts/zero_shot (+ /tts/cross_lingual, /tts/instruct)."""

from fastapi import APIRouter, Request

from app.api.deps import Speech
from app.api.openapi import documented_body
from app.api.responses import AudioResponse
from app.api.seed.body import Body, RequestBody
from app.api.seed.models import ERRORS, InstructBody, PromptBody, SynthesisBody, TtsBody
from app.core.engine import Mode
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SpeechRequest, SpeechService, VoiceRef
from app.core.voice_store import Upload

router = APIRouter(tags=["seed: speech"], responses=ERRORS)

_MP3 = FORMATS["mp3"]
_MP3_DOWNLOAD = {"Content-Disposition": "attachment; filename=tts.mp3"}
_PROMPT_FILE = {"prompt_audio": "prompt audio (any format PyAV reads), instead of prompt_audio_base64"}
_AUDIO = {200: {"content": {"audio/mpeg": {}}, "description": "MP3, streamed while it is synthesized"}}


MP3 = AudioOutput(_MP3)  # at the service's bitrate


def voice_ref(
    fields: SynthesisBody, spk_id: str = "", prompt_text: str = "", prompt_audio: Upload | None = None
) -> VoiceRef:
    return VoiceRef(name=spk_id, user=fields.user_id.strip(), prompt_audio=prompt_audio, prompt_text=prompt_text)


def speech_request(
    mode: Mode, fields: SynthesisBody, voice: VoiceRef, instruction: str = "", save_as: str = ""
) -> SpeechRequest:
    return SpeechRequest(
        mode,
        fields.tts_text,
        voice,
        instruction=instruction,
        speed=fields.speed,
        seed=fields.seed,
        stream=fields.stream,
        save_as=save_as,
    )


async def _mp3(speech: SpeechService, request: SpeechRequest, http: Request) -> AudioResponse:
    stream = await speech.synthesize(request, MP3, http.is_disconnected)
    return AudioResponse(stream, _MP3.media_type, _MP3_DOWNLOAD)


@router.post("/tts", openapi_extra=documented_body(TtsBody), responses=_AUDIO)
async def tts(speech: Speech, body: Body, http: Request) -> AudioResponse:
    """A built-in or cloned speaker, streamed as MP3 while it is synthesized."""
    fields = body.parse(TtsBody)
    return await _mp3(speech, speech_request(Mode.SFT, fields, voice_ref(fields, fields.spk_id)), http)


@router.post(
    "/tts/pcm",
    openapi_extra=documented_body(TtsBody),
    responses={200: {"content": {"audio/L16": {}}, "description": "raw s16le mono PCM; the rate in X-Sample-Rate"}},
)
async def tts_pcm(speech: Speech, body: Body, http: Request) -> AudioResponse:
    """Like /tts, as raw signed 16-bit little-endian mono PCM; the rate is in X-Sample-Rate."""
    fields = body.parse(TtsBody)
    request = speech_request(Mode.SFT, fields, voice_ref(fields, fields.spk_id))
    stream = await speech.synthesize(request, AudioOutput(FORMATS["pcm"]), http.is_disconnected)
    headers = {
        "Content-Disposition": "attachment; filename=tts.pcm",
        "X-Sample-Rate": str(speech.engine.sample_rate),
        "X-Channels": "1",
        "X-Bit-Depth": "16",
        "X-Sample-Format": "s16le",
    }
    return AudioResponse(stream, "audio/L16", headers)  # the seed's media type; the bytes are little-endian


async def _prompted(mode: Mode, body: RequestBody) -> SpeechRequest:
    fields = body.parse(PromptBody)
    audio = await body.audio("prompt_audio")
    return speech_request(mode, fields, voice_ref(fields, fields.spk_id, fields.prompt_text, audio))


@router.post("/tts/zero_shot", openapi_extra=documented_body(PromptBody, _PROMPT_FILE), responses=_AUDIO)
async def tts_zero_shot(speech: Speech, body: Body, http: Request) -> AudioResponse:
    """3s极速复刻: prompt audio (`prompt_audio_base64` or file `prompt_audio`) + `prompt_text`, or a cloned `spk_id`."""
    return await _mp3(speech, await _prompted(Mode.ZERO_SHOT, body), http)


@router.post("/tts/cross_lingual", openapi_extra=documented_body(PromptBody, _PROMPT_FILE), responses=_AUDIO)
async def tts_cross_lingual(speech: Speech, body: Body, http: Request) -> AudioResponse:
    """跨语种复刻: prompt audio or a cloned `spk_id`; the text may be in another language."""
    return await _mp3(speech, await _prompted(Mode.CROSS_LINGUAL, body), http)


@router.post("/tts/instruct", openapi_extra=documented_body(InstructBody, _PROMPT_FILE), responses=_AUDIO)
async def tts_instruct(speech: Speech, body: Body, http: Request) -> AudioResponse:
    """自然语言控制: a speaker (`spk_id`) or prompt audio steered by `instruct_text`."""
    fields = body.parse(InstructBody)
    voice = voice_ref(fields, fields.spk_id, prompt_audio=await body.audio("prompt_audio"))
    return await _mp3(speech, speech_request(Mode.INSTRUCT, fields, voice, fields.instruct_text), http)
