"""DashScope's CosyVoice WebSocket protocol at /api-ws/v1/inference, as the official ``dashscope`` SDK speaks it
(``dashscope.audio.tts_v2.SpeechSynthesizer``): run-task, continue-task (text, or a flush), finish-task; the
server answers task-started, result-generated events (sentence-begin, sentence-synthesis before each binary
audio frame, sentence-end), then task-finished, or task-failed with a code and a message.

This module is the connection: its frames read, checked and dispatched to its task (``ws_task``), one task at a
time, several in turn. Text is spoken sentence by sentence as soon as a sentence is complete, while more text
arrives; the task's audio goes through one encoder, so it is one valid stream.
"""

import asyncio
import collections
import contextlib
import logging

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.api.bodies import BodyProblem, read_json
from app.api.dashscope.models import Header, RunPayload, TaskPayload
from app.api.dashscope.ws_task import Task, TaskFailure
from app.api.deps import settings_of
from app.api.errors import validation_problems
from app.core.speech import SpeechService

log = logging.getLogger(__name__)

PATH = "/api-ws/v1/inference"
MAX_FRAME_BYTES = 1024 * 1024  # a text frame holding more than a message's characters can hold
NO_TASK_IDLE_SECONDS = 60.0  # a connection with no task is closed after this
_WAKE = object()

router = APIRouter()


def _event(task_id: str, event: str, payload: dict | None = None, **header) -> dict:
    return {"header": {"task_id": task_id, "event": event, "attributes": {}, **header}, "payload": payload or {}}


def _validated(model: type[BaseModel], data, where: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{where}.{field}" + f": {problem}" for field, problem in validation_problems(exc))
        raise TaskFailure("InvalidParameter", problems) from None


class Connection:
    def __init__(self, websocket: WebSocket, speech: SpeechService):
        self.ws, self.speech = websocket, speech
        self.idle_seconds = settings_of(websocket).dashscope_idle_seconds
        self.task: Task | None = None
        self.failed: collections.deque[str] = collections.deque(maxlen=64)  # the SDK still sends their finish-task
        self._sending = asyncio.Lock()
        # a few frames read ahead at most: uvicorn stops reading the socket while the app is behind
        self._messages: asyncio.Queue = asyncio.Queue(maxsize=4)

    async def send_event(self, task_id: str, event: str, payload: dict | None = None, **header) -> None:
        async with self._sending:
            await self.ws.send_json(_event(task_id, event, payload, **header))

    async def send_audio(self, task_id: str, payload: dict, data: bytes) -> None:
        """A sentence-synthesis event and the binary frame it announces, with nothing between them."""
        async with self._sending:
            await self.ws.send_json(_event(task_id, "result-generated", payload))
            await self.ws.send_bytes(data)

    def wake(self) -> None:
        """Have the loop look again at its timeout (a task ended)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._messages.put_nowait(_WAKE)

    async def serve(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while True:
                if self.task is None:
                    timeout = NO_TASK_IDLE_SECONDS
                else:  # a finishing task's client waits for audio: it owes us nothing
                    timeout = None if self.task.finishing else self.idle_seconds
                try:
                    message = await asyncio.wait_for(self._messages.get(), timeout)
                except TimeoutError:
                    if self.task is None:
                        await self.ws.close(1000, f"no task for {NO_TASK_IDLE_SECONDS:g} s")
                        return
                    await self.task.fail("RequestTimeOut", f"no message for {self.idle_seconds:g} s in a running task")
                    continue
                if message is None:  # the client left
                    return
                if message is not _WAKE:
                    await self._handle(message)
        except WebSocketDisconnect:
            log.debug("a DashScope connection ended while answering")
        except RuntimeError as exc:  # Starlette: a send after the close
            if WebSocketState.DISCONNECTED not in (self.ws.client_state, self.ws.application_state):
                raise
            log.debug("a DashScope connection ended while answering: %r", exc)
        finally:
            reader.cancel()
            if self.task is not None:
                await self.task.abort()

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._messages.put(message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        await self._messages.put(None)

    async def _handle(self, message: dict) -> None:
        task_id = self.task.task_id if self.task else ""
        try:
            if message.get("text") is None:
                raise TaskFailure("InvalidParameter", "binary frames are not accepted; send JSON text frames")
            if len(message["text"]) > MAX_FRAME_BYTES:
                raise TaskFailure("InvalidParameter", f"a message over {MAX_FRAME_BYTES} characters")
            try:
                frame = await read_json(message["text"].encode())
            except BodyProblem as exc:
                raise TaskFailure("InvalidParameter", f"message: {exc.problem}") from None
            if not isinstance(frame, dict):
                raise TaskFailure("InvalidParameter", "message: expected a JSON object")
            raw_header = frame.get("header")
            if isinstance(raw_header, dict) and isinstance(raw_header.get("task_id"), str):
                task_id = raw_header["task_id"][:128]
            header = _validated(Header, raw_header, "header")
            await self._dispatch(header, frame.get("payload", {}))
        except TaskFailure as exc:
            if self.task is not None and self.task.task_id == task_id:
                await self.task.fail(exc.code, exc.message)
            else:
                await self.send_event(task_id, "task-failed", error_code=exc.code, error_message=exc.message)

    async def _dispatch(self, header: Header, payload) -> None:
        if header.action == "run-task":
            if self.task is not None:
                raise TaskFailure("InvalidParameter", f"task {self.task.task_id} is still running on this connection")
            try:
                run = _validated(RunPayload, payload, "payload")
            except TaskFailure:
                self.failed.append(header.task_id)
                raise
            self.task = Task(self, header.task_id, run)
            await self.task.start()
            return
        if self.task is None or self.task.task_id != header.task_id:
            if header.task_id in self.failed:
                return  # the SDK's finish-task after a task-failed
            raise TaskFailure("InvalidParameter", f"header.task_id: no running task {header.task_id!r}")
        task_input = _validated(TaskPayload, payload, "payload").input
        if header.action == "continue-task":
            self.task.add(task_input.text, task_input.flush)
        elif task_input.directive == "cancel":
            await self.task.cancel()
        else:
            self.task.finish()


@router.websocket(PATH)
async def inference(websocket: WebSocket) -> None:
    await websocket.accept()
    await Connection(websocket, websocket.app.state.speech).serve()
