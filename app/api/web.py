"""The web page's door: the page itself at `/`, its static files under `/web/`, and its own small API.

The page (``app/web/static``: plain HTML, CSS and JavaScript modules, no build step) speaks the seed's voice
endpoints (/get_available_spks, /clone, /voices/{spk_id}) and the two below: /web/speak, one JSON body with
the page's field names streamed back in any format, and /web/prompt_check, a prompt's problems before it is
saved. Errors are the seed's shape, ``{"error": {"code", "message": "<field>: <problem>"}}``, with the page's
own field names.
"""

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.staticfiles import StaticFiles

from app.api.bodies import SafeBodyRoute
from app.api.deps import Speech, caller_user
from app.api.errors import field_names
from app.api.fields import NotABool
from app.api.responses import AudioResponse
from app.api.seed.models import ERRORS, MODE_NAMES, ModeName
from app.core.engine import Mode
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SPEEDS, SpeechRequest, VoiceRef

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
INDEX = STATIC / "index.html"

# the page's files are small and change with the server: always revalidated (ETag), never used stale
_REVALIDATE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# the page's names for the core's parameters, in its error messages
_FIELDS = {"text": "text", "voice": "voice", "instruction": "instruction"}

router = APIRouter(tags=["web page"], responses=ERRORS, route_class=SafeBodyRoute)

Format = Literal[tuple(FORMATS)]  # type: ignore[valid-type]


class SpeakBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = Field(description="what to say")
    voice: str = Field("", description="a built-in or cloned voice (GET /get_available_spks)")
    mode: Annotated[ModeName, WithJsonSchema({"type": "string", "enum": list(MODE_NAMES)})] = Field(
        Mode.SFT, description="sft, zero_shot, cross_lingual or instruct, or the seed's Chinese names of them"
    )
    instruction: str = Field("", description="how to speak, for instruct (自然语言控制)")
    speed: Annotated[float, NotABool] = Field(1.0, ge=SPEEDS[0], le=SPEEDS[1])
    format: Format = "mp3"


class PromptCheck(BaseModel):
    seconds: float = Field(description="the audio's length (decoding stops a little past the limit)")
    speech_seconds: float = Field(description="from its first to its last sound, as cloning trims it")
    peak: float = Field(description="the largest sample, 1.0 = full scale")
    clipped_fraction: float = Field(description="the fraction of the sound at full scale")
    problems: list[str] = Field(description="what would keep it from making a good voice, in words")
    ok: bool = Field(description="no problems: cloning will accept it")


_AUDIO = {
    200: {
        "description": "the audio, streamed while it is synthesized; X-Sample-Rate gives its rate",
        "content": {f.media_type: {} for f in FORMATS.values()},
    }
}


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
@router.api_route("/index.html", methods=["GET", "HEAD"], include_in_schema=False)
async def index() -> FileResponse:
    headers = {**_REVALIDATE, "Content-Security-Policy": _PAGE_POLICY, "Referrer-Policy": "no-referrer"}
    return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers=headers)


@router.post("/web/speak", responses=_AUDIO)
async def speak(body: SpeakBody, speech: Speech, http: Request) -> AudioResponse:
    """Speech in a built-in or cloned voice, in any of the formats, streamed while it is synthesized."""
    field_names(http).update(_FIELDS)
    voice = VoiceRef(name=body.voice.strip(), user=caller_user(http))
    request = SpeechRequest(body.mode, body.text, voice, instruction=body.instruction, speed=body.speed)
    chosen = FORMATS[body.format]
    output = AudioOutput(chosen)
    stream = await speech.synthesize(request, output, http.is_disconnected)
    headers = {
        "Content-Disposition": f"inline; filename=speech.{chosen.extension}",
        "Cache-Control": "no-store",
        "X-Sample-Rate": str(output.rate_for(speech.engine.sample_rate)),
        "X-Channels": "1",
        "X-Audio-Format": chosen.name,
    }
    if chosen.name == "pcm":
        headers["X-Sample-Format"] = "s16le"
    return AudioResponse(stream, chosen.media_type, headers)


@router.post("/web/prompt_check")
async def prompt_check(
    speech: Speech,
    prompt_audio: Annotated[UploadFile, File(description="the prompt audio (any format PyAV reads)")],
    prompt_text: Annotated[str, Form(description="its transcript, if there is one yet")] = "",
) -> PromptCheck:
    """A prompt's problems (silent, too short, too long, clipped), all of them, before it is saved as a voice."""
    data = await prompt_audio.read()
    report = await speech.check_prompt(data, prompt_text)
    return PromptCheck(**report.as_dict())


class _PageFiles(StaticFiles):
    """The page's files, revalidated on every use, with JavaScript's media type whatever the host's table says
    (a module script served as text/plain does not run)."""

    def lookup_path(self, path: str):
        if path.strip("/").casefold() == INDEX.name:  # the page only at / (with its security headers)
            return "", None
        return super().lookup_path(path)

    def file_response(self, full_path, stat_result, scope, status_code: int = 200):
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_REVALIDATE)
        media_type = _MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type and response.status_code == 200:
            response.headers["content-type"] = media_type
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/web", _PageFiles(directory=STATIC), name="web")
