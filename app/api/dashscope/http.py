"""DashScope's HTTP speech synthesizer (``dashscope.HttpSpeechSynthesizer``): ``POST
/api/v1/services/audio/tts/SpeechSynthesizer`` with the options in ``input``. One JSON answer whose
``output.audio.url`` serves the audio for an hour, or, with ``X-DashScope-SSE: enable``, server-sent events with
each sentence's audio (base64) as it is synthesized, then the URL of the whole."""

import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.bodies import SafeBodyRoute
from app.api.dashscope.errors import DOOR, ERRORS, error_body
from app.api.dashscope.models import SynthesisParameters, billed_characters
from app.api.dashscope.requests import speech_request, task_output
from app.api.dashscope.results import Results
from app.api.deps import Speech, caller_user, settings_of
from app.api.errors import DoorError
from app.core.speech_task import Audio, Done, Failed, SentenceBegins, SpeechTask, TaskEvent

log = logging.getLogger(__name__)

RESULT_BYTES = 256 * 1024 * 1024
RESULT_SECONDS = 3600.0

router = APIRouter(prefix="/api/v1/services/audio/tts", tags=["dashscope"], route_class=SafeBodyRoute, responses=ERRORS)


class SynthesisInput(SynthesisParameters):
    text: str = Field(min_length=1, description="the text to speak")


class SynthesisBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: SynthesisInput


def _results(request: Request) -> Results:
    state = request.app.state
    if not hasattr(state, "dashscope_results"):
        state.dashscope_results = Results(RESULT_BYTES, RESULT_SECONDS)
    return state.dashscope_results


def _audio(request: Request, data: bytes, media_type: str) -> dict:
    result_id, result = _results(request).put(data, media_type)
    url = str(request.url_for("dashscope_result", result_id=result_id))
    return {"url": url, "id": result_id, "expires_at": int(result.expires_at), "data": ""}


def _event(number: int, data: dict, error_status: int | None = None) -> str:
    head = f"id:{number}\nevent:error\nstatus:{error_status}\n" if error_status else f"id:{number}\nevent:result\n"
    return head + f"data:{json.dumps(data, ensure_ascii=False)}\n\n"


_ANSWERS = {
    200: {
        "description": "JSON with output.audio.url, or (X-DashScope-SSE: enable) events with each piece's audio",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


@router.post("/SpeechSynthesizer", responses=_ANSWERS)
async def synthesize(
    speech: Speech,
    body: SynthesisBody,
    http: Request,
    x_dashscope_sse: Annotated[str, Header(description="enable: server-sent events")] = "",
):
    """Speak ``input.text``: one JSON answer, or events as it is synthesized."""
    params, request_id = body.input, str(uuid.uuid4())
    usage = {"characters": billed_characters(params.text)}
    output = task_output(params, whole=x_dashscope_sse.lower() != "enable")
    if not output.whole:
        return await _events(speech, http, params, request_id, usage)
    request = speech_request(params, caller_user(http), settings_of(http).dashscope_voices, params.text)
    stream = await speech.synthesize(request, output, http.is_disconnected)
    data = await stream.collect()
    if stream.ended_early:
        raise DoorError(499, "RequestCancelled", "the client left")
    audio = _audio(http, data, output.format.media_type)
    return {"request_id": request_id, "output": {"finish_reason": "stop", "audio": audio}, "usage": usage}


async def _events(speech, http: Request, params: SynthesisInput, request_id: str, usage: dict) -> StreamingResponse:
    speech.check_text(params.text)  # the whole text's limits, before it is cut into sentences
    output = task_output(params)
    task = SpeechTask(speech, speech_request(params, caller_user(http), settings_of(http).dashscope_voices), output)
    await task.start()  # an unknown voice is a JSON error, before any event
    task.add(params.text)
    task.end()
    task_events = task.events(http.is_disconnected)
    try:
        early = await _until_audio(task_events)
    except BaseException:
        await task_events.aclose()
        await task.close()
        raise
    number, audio_id, whole = 0, str(uuid.uuid4()), bytearray()

    def render(event: TaskEvent) -> str | None:
        nonlocal number
        if isinstance(event, Audio):  # the tail too: the SDK joins only sentence events' audio
            whole.extend(event.data)
            number += 1
            audio = {"data": base64.b64encode(event.data).decode(), "id": audio_id}
            piece = {"type": "sentence-synthesis", "sentence": {"index": event.index}, "audio": audio}
            return _event(number, {"request_id": request_id, "output": piece, "usage": None})
        if isinstance(event, Done):
            audio = _audio(http, bytes(whole), output.format.media_type)
            final = {"request_id": request_id, "output": {"finish_reason": "stop", "audio": audio}}
            return _event(number + 1, {**final, "usage": usage})
        if isinstance(event, Failed):
            said = DOOR.domain(event.error, {})
            return _event(number + 1, error_body(said.code, said.message, request_id), said.status)
        return None

    async def events():
        try:
            async with contextlib.aclosing(task_events):
                for event in early:
                    if (text := render(event)) is not None:
                        yield text
                async for event in task_events:
                    if (text := render(event)) is not None:
                        yield text
        except Exception:  # noqa: BLE001 - the answer has begun: end it with an error event
            log.exception("DashScope HTTP synthesis failed")
            message = "synthesis failed; the server log has the details"
            yield _event(number + 1, error_body("InternalError", message, request_id), 500)

    return _TaskEvents(task, task_events, events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def _until_audio(events: AsyncIterator[TaskEvent]) -> list[TaskEvent]:
    """The task's events up to its first audio: a task that cannot begin (every slot busy, the voice's storage
    down) is refused as a JSON error with its own status (429 with Retry-After) before the event stream starts."""
    early = []
    async for event in events:
        if isinstance(event, Failed):
            raise event.error
        early.append(event)
        if not isinstance(event, SentenceBegins):
            break
    return early


class _TaskEvents(StreamingResponse):
    """Events of a SpeechTask that is closed on every path, even when the client left before the first event."""

    def __init__(self, task: SpeechTask, task_events: AsyncGenerator, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._task, self._task_events = task, task_events

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._task_events.aclose()  # its sentence first, then the task that holds the encoder
            await self._task.close()


@router.get("/results/{result_id}", name="dashscope_result", responses={200: {"content": {"audio/mpeg": {}}}})
async def result(http: Request, result_id: str) -> Response:
    """The audio of an earlier synthesis (``output.audio.url``), for an hour."""
    found = _results(http).get(result_id)
    if found is None:
        raise DoorError(404, "NotFound", f"result_id: no audio {result_id!r} (results are kept for an hour)")
    return Response(found.data, media_type=found.media_type)
