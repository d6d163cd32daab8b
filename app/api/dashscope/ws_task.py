"""One DashScope WebSocket task: its text into the core's SpeechTask, the task's events rendered as DashScope's
(result-generated: sentence-begin, sentence-synthesis before each binary audio frame, sentence-end; then
task-finished or task-failed). Every task ends with one of those two: the SDK's ``call()`` waits for ever for one.
"""

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.api.dashscope.errors import DOOR
from app.api.dashscope.models import RunPayload, billed_characters
from app.api.dashscope.requests import speech_request, task_output
from app.api.deps import caller_user, settings_of
from app.core.errors import DomainError
from app.core.speech_task import (
    Audio,
    Done,
    Failed,
    SentenceBegins,
    SentenceEnds,
    SpeechTask,
    Stalled,
    TaskEvent,
)

if TYPE_CHECKING:
    from app.api.dashscope.ws import Connection

log = logging.getLogger(__name__)

# DashScope's limits: characters per message and per task
MAX_MESSAGE_CHARS = 20_000
MAX_TASK_CHARS = 200_000
INTERNAL = "synthesis failed; the server log has the details"


class TaskFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Task:
    def __init__(self, connection: "Connection", task_id: str, run: RunPayload):
        self.connection, self.task_id, self.run = connection, task_id, run
        self.speech_task: SpeechTask | None = None
        self.received = 0  # characters of text received
        self.characters = 0  # characters spoken, as DashScope bills them
        self.finishing = False
        self.ended = False  # its terminal event is decided (task-finished or task-failed)
        self._speaker: asyncio.Task | None = None

    async def start(self) -> None:
        ws, params = self.connection.ws, self.run.parameters
        try:
            request = speech_request(params, caller_user(ws), settings_of(ws).dashscope_voices)
            self.speech_task = SpeechTask(self.connection.speech, request, task_output(params))
            await self.speech_task.start()
        except DomainError as exc:
            await self.fail(*_code(exc))
            return
        except Exception:  # noqa: BLE001 - the task must end with an event, or the SDK waits for ever
            log.exception("task %s could not start", self.task_id)
            await self.fail("InternalError", INTERNAL)
            return
        await self.connection.send_event(self.task_id, "task-started")
        self._speaker = asyncio.create_task(self._speak())

    def add(self, text: str, flush: bool) -> None:
        if self.finishing:
            raise TaskFailure("InvalidParameter", "continue-task after finish-task")
        if len(text) > MAX_MESSAGE_CHARS:
            raise TaskFailure("InvalidParameter", f"input.text: {len(text)} characters; at most {MAX_MESSAGE_CHARS}")
        self.received += len(text)
        if self.received > MAX_TASK_CHARS:
            raise TaskFailure("InvalidParameter", f"the task's text is over {MAX_TASK_CHARS} characters")
        try:
            self.speech_task.add(text, flush)
        except DomainError as exc:
            raise TaskFailure(*_code(exc)) from None

    def finish(self) -> None:
        if not self.finishing:
            self.finishing = True
            self.speech_task.end()

    async def _speak(self) -> None:
        """The task's events, rendered as DashScope's, until it ends."""
        try:
            async with contextlib.aclosing(self.speech_task.events(self._gone)) as events:
                async for event in events:
                    await self._render(event)
        except WebSocketDisconnect:
            log.debug("task %s: the client left", self.task_id)
        except Exception as exc:  # noqa: BLE001 - every task must end with an event, or the SDK waits for ever
            if isinstance(exc, RuntimeError) and await self._gone():  # Starlette: a send after the close
                log.debug("task %s: the client left (%r)", self.task_id, exc)
                return
            log.exception("task %s failed", self.task_id)
            await self.fail("InternalError", INTERNAL)

    async def _render(self, event: TaskEvent) -> None:
        send, task_id = self.connection.send_event, self.task_id
        if isinstance(event, SentenceBegins):
            self.characters += billed_characters(event.text)
            await send(task_id, "result-generated", {"output": {"type": "sentence-begin", **_sentence(event)}})
        elif isinstance(event, Audio):
            output = {"type": "sentence-synthesis"}
            if not event.tail:
                output["sentence"] = {"index": event.index, "words": []}
            await self.connection.send_audio(task_id, {"output": output}, event.data)
        elif isinstance(event, SentenceEnds):
            output = {"type": "sentence-end", **_sentence(event)}
            await send(task_id, "result-generated", {"output": output, "usage": {"characters": self.characters}})
        elif isinstance(event, Done):
            self.ended = True  # from here a bad frame cannot add a task-failed to the task-finished
            await send(task_id, "task-finished", {"output": {}, "usage": {"characters": self.characters}})
            self._done()
        elif isinstance(event, Failed):
            await self.fail(*_code(event.error))
        elif isinstance(event, Stalled) and not await self._gone():  # connected, but it read nothing
            await self.fail("RequestTimeOut", "the client read no audio for too long")

    async def _gone(self) -> bool:
        ws = self.connection.ws
        return WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state)

    async def fail(self, code: str, message: str) -> None:
        await self._end("task-failed", error_code=code, error_message=message)

    async def cancel(self) -> None:
        """The SDK's streaming_cancel: stop at once, and say the task finished."""
        await self._end("task-finished", {"output": {}, "usage": {"characters": 0}})

    async def abort(self) -> None:
        """The connection ended: stop synthesis, free what the task holds."""
        await self._end(None)

    async def _end(self, event: str | None, payload: dict | None = None, **header) -> None:
        """The one way a task ends: it leaves the connection, synthesis stops, what it holds is freed, and its last
        event (if any: none when the connection is gone) is sent; frames the SDK still sends for it are ignored."""
        if event is not None:
            if self.ended:
                return
            self.ended = True
            self.connection.failed.append(self.task_id)
        self._done()
        speaker = self._speaker
        if speaker is not None and speaker is not asyncio.current_task():  # the speaker ending it runs on
            self._speaker = None
            while not speaker.done():  # Python 3.11's wait_for can swallow one cancellation: ask until it ends
                speaker.cancel()
                await asyncio.wait([speaker], timeout=1.0)  # its own failures were answered or logged
        if self.speech_task is not None:
            await self.speech_task.close()
        if event is not None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.connection.send_event(self.task_id, event, payload, **header)

    def _done(self) -> None:
        if self.connection.task is self:
            self.connection.task = None
            self.connection.wake()


def _sentence(event: SentenceBegins | SentenceEnds) -> dict:
    return {"sentence": {"index": event.index, "words": []}, "original_text": event.text}


def _code(exc: DomainError) -> tuple[str, str]:
    said = DOOR.domain(exc, {})
    return said.code, said.message
