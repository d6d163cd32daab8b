"""DashScope's CosyVoice WebSocket protocol at /api-ws/v1/inference, as the official ``dashscope`` SDK speaks it
(``dashscope.audio.tts_v2.SpeechSynthesizer``): run-task, continue-task (text, or a flush), finish-task; the
server answers task-started, result-generated events (sentence-begin, sentence-synthesis before each binary
audio frame, sentence-end), then task-finished, or task-failed with a code and a message.

Text is spoken sentence by sentence as soon as a sentence is complete, while more text arrives; the task's
audio goes through one encoder, so it is one valid stream. Several tasks may follow each other on a connection.
Every task ends with task-finished or task-failed: the SDK's ``call()`` waits for ever for one.
"""

import asyncio
import collections
import contextlib
import logging

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.api.bodies import BodyProblem, read_json
from app.api.dashscope.models import Header, RunPayload, TaskPayload, billed_characters
from app.api.dashscope.requests import FIELDS, STATUS, speech_request, task_output
from app.api.deps import caller_user
from app.api.errors import domain_error, validation_problems
from app.core.errors import DomainError
from app.core.speech import SpeechService
from app.core.speech_task import SpeechTask

log = logging.getLogger(__name__)

PATH = "/api-ws/v1/inference"
# DashScope's limits: characters per message and per task, and the longest gap between a task's messages
MAX_MESSAGE_CHARS = 20_000
MAX_TASK_CHARS = 200_000
MAX_FRAME_BYTES = 1024 * 1024  # a text frame holding more than a message's characters can hold
NO_TASK_IDLE_SECONDS = 60.0  # a connection with no task is closed after this
_WAKE = object()
INTERNAL = "synthesis failed; the server log has the details"

router = APIRouter()


class TaskFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


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
        self.idle_seconds = speech.settings.dashscope_idle_seconds
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


class Task:
    def __init__(self, connection: Connection, task_id: str, run: RunPayload):
        self.connection, self.task_id, self.run = connection, task_id, run
        self.speech_task: SpeechTask | None = None
        self.received = 0
        self.finishing = False
        self.ended = False  # its terminal event is decided (task-finished or task-failed)
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._speaker: asyncio.Task | None = None

    async def start(self) -> None:
        speech, params = self.connection.speech, self.run.parameters
        try:
            request = speech_request(speech, params, caller_user(self.connection.ws))
            self.speech_task = SpeechTask(speech, request, task_output(params))
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
        for sentence in self.speech_task.sentences(text, flush):
            self._sentences.put_nowait(sentence)

    def finish(self) -> None:
        if self.finishing:
            return
        for sentence in self.speech_task.sentences("", flush=True):
            self._sentences.put_nowait(sentence)
        self._sentences.put_nowait(None)
        self.finishing = True

    async def _speak(self) -> None:
        send, task_id, characters, index = self.connection.send_event, self.task_id, 0, 0
        try:
            while (sentence := await self._sentences.get()) is not None:
                characters += billed_characters(sentence)
                output = {"sentence": {"index": index, "words": []}, "original_text": sentence}
                await send(task_id, "result-generated", {"output": {"type": "sentence-begin", **output}})
                stream = await self.speech_task.speak(sentence, self._gone)
                synthesis = {"output": {"type": "sentence-synthesis", "sentence": output["sentence"]}}
                async for chunk in stream.chunks():
                    await self.connection.send_audio(task_id, synthesis, chunk)
                if stream.ended_early:
                    if not await self._gone():  # connected, but it read nothing for the stall timeout
                        await self.fail("RequestTimeOut", "the client read no audio for too long", from_speaker=True)
                    return
                ended = {"output": {"type": "sentence-end", **output}, "usage": {"characters": characters}}
                await send(task_id, "result-generated", ended)
                index += 1
            tail = await self.speech_task.finish()
            if tail:
                await self.connection.send_audio(task_id, {"output": {"type": "sentence-synthesis"}}, tail)
            self.ended = True  # from here a bad frame cannot add a task-failed to the task-finished
            await send(task_id, "task-finished", {"output": {}, "usage": {"characters": characters}})
            self._done()
        except DomainError as exc:
            await self.fail(*_code(exc), from_speaker=True)
        except WebSocketDisconnect:
            log.debug("task %s: the client left", task_id)
        except Exception as exc:  # noqa: BLE001 - every task must end with an event, or the SDK waits for ever
            if isinstance(exc, RuntimeError) and await self._gone():  # Starlette: a send after the close
                log.debug("task %s: the client left (%r)", task_id, exc)
                return
            log.exception("task %s failed", task_id)
            await self.fail("InternalError", INTERNAL, from_speaker=True)

    async def _gone(self) -> bool:
        ws = self.connection.ws
        return WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state)

    async def fail(self, code: str, message: str, from_speaker: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        self.connection.failed.append(self.task_id)
        self._done()
        if not from_speaker:
            await self._stop_speaking()
        await self._close_speech()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.connection.send_event(self.task_id, "task-failed", error_code=code, error_message=message)

    async def cancel(self) -> None:
        """The SDK's streaming_cancel: stop at once, and say the task finished."""
        if self.ended:
            return
        self.ended = True
        self.connection.failed.append(self.task_id)  # nothing more is answered for it
        self._done()
        await self._stop_speaking()
        await self._close_speech()
        await self.connection.send_event(self.task_id, "task-finished", {"output": {}, "usage": {"characters": 0}})

    async def abort(self) -> None:
        """The connection ended: stop synthesis, free what the task holds."""
        self._done()
        await self._stop_speaking()
        await self._close_speech()

    async def _close_speech(self) -> None:
        if self.speech_task is not None:
            await self.speech_task.close()

    async def _stop_speaking(self) -> None:
        speaker, self._speaker = self._speaker, None
        if speaker is not None and speaker is not asyncio.current_task():
            while not speaker.done():  # Python 3.11's wait_for can swallow one cancellation: ask until it ends
                speaker.cancel()
                await asyncio.wait([speaker], timeout=1.0)  # its own failures were answered or logged

    def _done(self) -> None:
        if self.connection.task is self:
            self.connection.task = None
            self.connection.wake()


def _code(exc: DomainError) -> tuple[str, str]:
    _, code, _, message = domain_error(exc, STATUS, {}, FIELDS)
    return code, message


@router.websocket(PATH)
async def inference(websocket: WebSocket) -> None:
    await websocket.accept()
    await Connection(websocket, websocket.app.state.speech).serve()
