"""One Wyoming connection: events are read as they come and handled one after another by a worker, so a client
that leaves mid-speech is noticed at once (its synthesis stops) and a stream's text keeps arriving while a
sentence is spoken.

- ``describe`` -> ``info``; ``ping`` -> ``pong``.
- ``synthesize`` -> ``audio-start``, ``audio-chunk``s, ``audio-stop``: the whole text as one piece of audio.
- ``synthesize-start`` (the voice), ``synthesize-chunk``s (text as an LLM writes it), ``synthesize-stop`` -> each
  sentence spoken as soon as it is complete, as ``audio-start``/``audio-chunk``s/``audio-stop``, then
  ``synthesize-stopped``. The ``synthesize`` a client sends inside a stream (for servers without streaming) is
  ignored, as Wyoming asks.
- A one-shot ``synthesize`` the core refuses (an unknown voice, empty text, every slot busy) is an ``error``
  event, then the connection closes (Home Assistant reads up to ``audio-stop`` or the close); inside a stream
  the ``error`` ends the stream's speech and the connection stays open. A failure in the middle of a sentence's
  audio is an ``error`` and the connection closes (a client waiting for that audio's ``audio-stop`` would
  otherwise wait for ever). Bytes that are not events: an ``error``, then the connection closes.
"""

import asyncio
import contextlib
import logging
import time

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from app.api.wyoming.events import Malformed, read_event
from app.core.audio_stream import AudioStream
from app.core.engine import Mode
from app.core.errors import DomainError, Invalid, Missing
from app.core.formats import FORMATS, AudioOutput
from app.core.speech import SpeechRequest
from app.core.speech_task import Audio, Failed, SentenceEnds, SpeechTask, Stalled

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0  # no event for this long and nothing being spoken (a stream waiting for text too): closed
WRITE_SECONDS = 60.0  # a client that reads none of an event for this long is gone
QUEUED_EVENTS = 4
MAX_STREAM_CHARS = 200_000  # the text of one synthesize-start .. synthesize-stop
PCM = AudioOutput(FORMATS["pcm"])  # 16-bit mono at the engine's rate, what Home Assistant wraps in a WAV


class AudioCut(Exception):
    """A sentence's audio failed after its audio-start: the connection closes after the error."""


def _text(data: dict) -> str:
    text = data.get("text")
    if text is None:
        raise Missing("text", "the event has no text")
    if not isinstance(text, str):
        raise Invalid("text", "expected a string")
    return text


def _echo(text: object) -> str | None:
    """A ping's text, when it can be sent back (a string that is valid UTF-8)."""
    try:
        return text if isinstance(text, str) and text.encode("utf-8") else None
    except UnicodeEncodeError:
        return None


def _error(exc: DomainError) -> Event:
    code = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(exc).__name__).lstrip("_")
    return Error(text=str(exc), code=code).event()


class Session(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, door):
        super().__init__(reader, writer)
        self.door = door
        # a few events ahead of the worker at most: a client that sends faster waits, through TCP
        self._events: asyncio.Queue[Event] = asyncio.Queue(QUEUED_EVENTS)
        self._working = False
        self._last_activity = time.monotonic()
        self._gone = False
        self._task: SpeechTask | None = None  # an open stream (None inside a stream that failed to start)
        self._streaming = False
        self._stream_chars = 0

    async def run(self) -> None:
        self.door.sessions.add(asyncio.current_task())
        reading, working = asyncio.create_task(self._read()), asyncio.create_task(self._work())
        try:
            while True:
                wait = max(0.01, self._last_activity + IDLE_SECONDS - time.monotonic())
                done, _ = await asyncio.wait({reading, working}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if reading in done:  # the client left, or sent bytes that are not events
                    problem = reading.result()
                    if problem is not None:
                        working.cancel()
                        await asyncio.gather(working, return_exceptions=True)
                        await self._send(Error(text=f"not a Wyoming event: {problem}", code="malformed").event())
                    break
                if working in done:  # it said why, or the client stopped reading
                    break
                idle = time.monotonic() - self._last_activity >= IDLE_SECONDS
                if idle and not self._working and self._events.empty():
                    log.debug("Wyoming: closing a connection idle for %g s", IDLE_SECONDS)
                    break
        except OSError:  # the client is gone
            pass
        finally:
            self._gone = True
            for task in (reading, working):
                task.cancel()
            await asyncio.gather(reading, working, return_exceptions=True)
            self.writer.close()
            self.door.sessions.discard(asyncio.current_task())

    async def handle_event(self, event: Event) -> bool:  # the library's hook; events come through run()
        await self._handle(event)
        return True

    async def _read(self) -> Malformed | None:
        """Events into the queue until the client leaves (None) or sends something that is not one."""
        try:
            while (event := await read_event(self.reader)) is not None:
                self._last_activity = time.monotonic()
                await self._events.put(Event(type=event.type, data=event.data))  # a speaker takes no payload
        except Malformed as exc:
            return exc
        except OSError:
            pass
        return None

    async def _send(self, event: Event) -> None:
        """An event to the client; one that reads nothing for WRITE_SECONDS is gone (TimeoutError: an OSError)."""
        await asyncio.wait_for(self.write_event(event), WRITE_SECONDS)

    async def _work(self) -> None:
        try:
            while True:
                event = await self._events.get()
                self._working = True
                one_shot = Synthesize.is_type(event.type) and not self._streaming
                try:
                    await self._handle(event)
                except DomainError as exc:
                    await self._send(_error(exc))
                    if one_shot:  # its client reads up to audio-stop or the close (Home Assistant does)
                        return
                except AudioCut as exc:
                    await self._send(_error(exc.__cause__))
                    return
                except OSError:  # the client is gone, or reads nothing: not a bug
                    raise
                except Exception:  # noqa: BLE001 - a bug: said to the client, the details in our log
                    log.exception("Wyoming: handling %s failed", event.type)
                    failure = Error(text="synthesis failed; the server log has the details", code="internal")
                    await self._send(failure.event())
                    return
                finally:
                    self._working = False
                    self._last_activity = time.monotonic()
        except OSError:  # the client is gone, or reads nothing
            pass
        finally:
            await self._close_stream()

    async def _handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self._send((await self.door.info()).event())
        elif Ping.is_type(event.type):
            await self._send(Pong(text=_echo(event.data.get("text"))).event())
        elif Synthesize.is_type(event.type):
            if not self._streaming:  # inside a stream: the copy for servers that cannot stream
                await self._synthesize(event.data)
        elif SynthesizeStart.is_type(event.type):
            await self._start_stream(event.data)
        elif SynthesizeChunk.is_type(event.type):
            await self._stream_text(_text(event.data), flush=False)
        elif SynthesizeStop.is_type(event.type):
            await self._stop_stream()
        else:
            log.debug("Wyoming: ignoring a %r event", event.type)

    async def _synthesize(self, data: dict) -> None:
        voice = await self.door.voice_for(data.get("voice"))
        request = SpeechRequest(Mode.SFT, _text(data), voice)
        stream = await self.door.speech.synthesize(request, PCM, self._is_gone)
        await self._send_audio(stream)

    async def _start_stream(self, data: dict) -> None:
        if self._streaming:
            raise Invalid(None, "synthesize-start inside a stream: send synthesize-stop first")
        self._streaming, self._stream_chars = True, 0  # from here until synthesize-stop, even if it fails now
        voice = await self.door.voice_for(data.get("voice"))
        task = SpeechTask(self.door.speech, SpeechRequest(Mode.SFT, "", voice), PCM)
        await task.start()
        self._task = task

    async def _stream_text(self, text: str, flush: bool) -> None:
        if not self._streaming:
            raise Invalid(None, "synthesize-chunk outside a stream: send synthesize-start first")
        if self._task is None:  # the stream failed (and said so): its text is not spoken
            return
        self._stream_chars += len(text)
        if self._stream_chars > MAX_STREAM_CHARS:
            await self._close_stream()
            raise Invalid("text", f"the stream's text passed {MAX_STREAM_CHARS} characters; it is not spoken")
        self._task.add(text, flush)
        await self._speak_ready()

    async def _speak_ready(self) -> None:
        """Speak the sentences the stream's text has completed, each as audio-start, chunks, audio-stop."""
        rate, started = self.door.speech.engine.sample_rate, False
        async with contextlib.aclosing(self._task.events(self._is_gone, wait=False)) as events:
            async for event in events:
                if isinstance(event, Audio | SentenceEnds) and not started:
                    await self._send(AudioStart(rate=rate, width=2, channels=1).event())
                    started = True
                if isinstance(event, Audio) and event.data:
                    await self._send(AudioChunk(rate=rate, width=2, channels=1, audio=event.data).event())
                if isinstance(event, SentenceEnds) or (isinstance(event, Audio) and event.tail):
                    await self._send(AudioStop().event())  # a tail (none in raw PCM) is a piece of its own
                    started = False
                elif isinstance(event, Failed):
                    await self._close_stream()  # the rest of the stream is not spoken either
                    if started:
                        raise AudioCut() from event.error
                    raise event.error
                elif isinstance(event, Stalled):  # the client left, or read nothing for the stall timeout
                    raise ConnectionError("the client stopped reading")

    async def _stop_stream(self) -> None:
        if not self._streaming:
            raise Invalid(None, "synthesize-stop outside a stream: send synthesize-start first")
        try:
            if self._task is not None:
                self._task.end()
                await self._speak_ready()  # the last sentence (raw PCM: the encoder keeps nothing back)
        finally:
            await self._close_stream()
            self._streaming = False
        await self._send(SynthesizeStopped().event())

    async def _close_stream(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await task.close()

    async def _send_audio(self, stream: AudioStream) -> None:
        rate, started = self.door.speech.engine.sample_rate, False
        try:
            async for chunk in stream.chunks():
                if not started:
                    await self._send(AudioStart(rate=rate, width=2, channels=1).event())
                    started = True
                if chunk:
                    await self._send(AudioChunk(rate=rate, width=2, channels=1, audio=chunk).event())
        except DomainError as exc:
            if started:
                raise AudioCut() from exc
            raise
        finally:
            stream.close()
        if stream.ended_early:  # the client left, or read nothing for the stall timeout: the connection ends
            raise ConnectionError("the client stopped reading")
        if not started:
            await self._send(AudioStart(rate=rate, width=2, channels=1).event())
        await self._send(AudioStop().event())

    async def _is_gone(self) -> bool:
        return self._gone
