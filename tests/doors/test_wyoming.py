"""The Wyoming door (COSYVOICE_WYOMING_PORT), driven by the `wyoming` library's client the way Home Assistant
drives a TTS service: homeassistant/components/wyoming/tts.py (`async_get_tts_audio`: one `synthesize`, audio read
up to the first `audio-stop` into a WAV; `async_stream_tts_audio`: `synthesize-start`, `synthesize-chunk`s, the
whole text once more as `synthesize` for servers that cannot stream, `synthesize-stop`, audio read up to
`synthesize-stopped`, the first `audio-start` making the WAV's header)."""

import asyncio
import contextlib
import io
import json
import logging
import secrets
import time
import wave

import httpx
import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import async_read_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from app.api.wyoming import session
from app.config import Settings
from tests.support.logs import logged
from tests.support.ports import free_port
from tests.support.server import live_server
from tests.support.speech import EN_PROMPT

KEY = "sk-alice-" + secrets.token_hex(12)
STORY = "The first sentence is here. The second one follows it! Is this the third?"


def _settings(tmp_path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", wyoming_port=free_port(), **overrides)


@pytest.fixture
def served(tmp_path, caplog):
    """(HTTP URL, Wyoming port, app); no error or traceback of ours may reach the log."""
    caplog.set_level(logging.DEBUG)
    settings = _settings(tmp_path)
    with live_server(settings) as (url, app):
        yield url, settings.wyoming_port, app
    _assert_quiet_log(caplog)


def _assert_quiet_log(caplog) -> None:
    loud = [r for r in logged(caplog) if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


async def describe(port: int) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        return Info.from_event(await client.read_event())


async def ha_get_tts_audio(client: AsyncTcpClient, text: str, voice: str | None) -> bytes | Error:
    """Home Assistant's `async_get_tts_audio`: the WAV it hands on. It reads up to `audio-stop` or the end of
    the connection, passing over other events: then this returns the error event the server sent before closing."""
    await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
    chunks, error = [], None
    while True:
        event = await client.read_event()
        if event is None:  # Home Assistant gives up here
            assert error is not None, "the connection closed without an error event"
            return error
        if Error.is_type(event.type):
            error = Error.from_event(event)
        if AudioStop.is_type(event.type):
            break
        if AudioChunk.is_type(event.type):
            chunks.append(AudioChunk.from_event(event))  # the WAV takes its format from the first chunk
    first = chunks[0]
    return _wav(first.rate, first.width, first.channels, b"".join(chunk.audio for chunk in chunks))


def _wav(rate: int, width: int, channels: int, frames: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setframerate(rate)
        writer.setsampwidth(width)
        writer.setnchannels(channels)
        writer.writeframes(frames)
    return out.getvalue()


async def ha_stream_tts_audio(port: int, pieces: list[str], voice: str) -> tuple[list[str], bytes]:
    """Home Assistant's `async_stream_tts_audio`: (the event types it read, the WAV it hands on)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        wanted = SynthesizeVoice(name=voice)
        await client.write_event(SynthesizeStart(voice=wanted).event())
        for piece in pieces:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text="".join(pieces), voice=wanted).event())  # for older servers
        await client.write_event(SynthesizeStop().event())
        seen, start, frames = [], None, []
        while True:
            event = await client.read_event()
            assert event is not None, "the connection closed"
            seen.append(event.type)
            if SynthesizeStopped.is_type(event.type) or Error.is_type(event.type):
                break
            if AudioStart.is_type(event.type) and start is None:  # the first one makes the WAV's header
                start = AudioStart.from_event(event)
            elif AudioChunk.is_type(event.type):
                frames.append(AudioChunk.from_event(event).audio)
        return seen, _wav(start.rate, start.width, start.channels, b"".join(frames))


def _line(kind: str, data: dict) -> bytes:
    """An event as one header line, its text in JSON escapes (a lone surrogate too)."""
    return json.dumps({"type": kind, "data": data}).encode() + b"\n"


def samples_of(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        assert (reader.getsampwidth(), reader.getnchannels()) == (2, 1)
        return np.frombuffer(reader.readframes(reader.getnframes()), "<i2"), reader.getframerate()


def pcm_of(url: str, text: str, voice: str) -> np.ndarray:
    response = httpx.post(f"{url}/tts/pcm", json={"tts_text": text, "spk_id": voice}, timeout=60)
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, "<i2")


# -- describe ------------------------------------------------------------------------------------------------


def test_info_lists_every_voice_with_its_languages_and_streaming(served, male_prompt):
    url, port, _app = served
    clone = httpx.post(
        f"{url}/clone",
        data={"spk_id": "reader", "prompt_text": EN_PROMPT},
        files={"prompt_audio": ("p.wav", male_prompt)},
    )
    assert clone.status_code == 200, clone.text
    (program,) = run(describe(port)).tts
    assert program.installed and program.supports_synthesize_streaming
    voices = {voice.name: voice for voice in program.voices}
    assert set(voices) == set(httpx.get(f"{url}/get_available_spks").json()["speakers"])
    assert voices["英文女"].languages == ["en"] and voices["中文男"].languages == ["zh"]
    assert voices["reader"].languages == ["zh", "en", "ja", "ko"] and "cloned" in voices["reader"].description
    assert all(voice.installed for voice in program.voices)


def test_with_api_keys_it_lists_the_builtins_and_only_its_users_voices(tmp_path, male_prompt):
    keys = tmp_path / "keys.txt"
    bob = "sk-bob-" + secrets.token_hex(12)
    keys.write_text(f"{KEY} alice\n{bob} bob\n")
    for user, expected in (("", set()), ("alice", {"alices_voice"})):
        settings = _settings(tmp_path, api_keys_file=keys, wyoming_user=user)
        with live_server(settings) as (url, app):
            for key, name in ((KEY, "alices_voice"), (bob, "bobs_voice")):
                form = {"spk_id": name, "prompt_text": EN_PROMPT, "overwrite": "true"}
                answer = httpx.post(
                    f"{url}/clone",
                    data=form,
                    files={"prompt_audio": ("p.wav", male_prompt)},
                    headers={"X-API-Key": key},
                )
                assert answer.status_code == 200, answer.text
            names = {voice.name for voice in run(describe(settings.wyoming_port)).tts[0].voices}

            refused = run(speak_once(settings.wyoming_port, "bobs_voice"))
        assert names - set(app.state.speech.voices.builtin_ids()) == expected
        assert isinstance(refused, Error) and refused.code == "not_found"


async def speak_once(port: int, voice: str) -> bytes | Error:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        return await ha_get_tts_audio(client, "Hello.", voice)


# -- synthesize ----------------------------------------------------------------------------------------------


def test_home_assistants_synthesize_gets_the_voice_it_names(served):
    url, port, _app = served

    async def two_voices():
        async with AsyncTcpClient("127.0.0.1", port) as client:  # one connection, two requests
            return [await ha_get_tts_audio(client, STORY, voice) for voice in ("英文女", "英文男")]

    female, male = run(two_voices())
    for wav_bytes, voice in ((female, "英文女"), (male, "英文男")):
        samples, rate = samples_of(wav_bytes)
        assert rate == 24000
        np.testing.assert_array_equal(samples, pcm_of(url, STORY, voice))  # the same audio as the seed door's


def test_a_refused_synthesize_is_an_error_event_then_the_close(served):
    """Home Assistant reads a synthesize's answer up to audio-stop or the close: the close ends its wait."""
    _url, port, _app = served

    async def refused(data: dict) -> tuple[Error, object]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_line("synthesize", data))  # as JSON escapes, which the client's writer cannot send
        answer = Error.from_event(await async_read_event(reader)), await async_read_event(reader)
        writer.close()
        return answer

    cases = [
        {"text": "Hello.", "voice": {"name": "nobody"}},
        {"text": "...", "voice": {"name": "英文女"}},
        {"voice": {"name": "英文女"}},
        {"text": 5},
        {"text": "Hi.", "voice": "英文女"},
        {"text": "\ud800 hello", "voice": {"name": "英文女"}},
    ]
    answers = [run(refused(data)) for data in cases]
    assert [after for _, after in answers] == [None] * len(cases)  # closed after the error
    assert [(e.code, e.text.split(":")[0]) for e, _ in answers] == [
        ("not_found", "voice"),
        ("invalid", "text"),
        ("missing", "text"),
        ("invalid", "text"),
        ("invalid", "voice"),
        ("invalid", "text"),
    ]
    assert "no voice named 'nobody'" in answers[0][0].text and "unpaired surrogate" in answers[-1][0].text
    refused_in_home_assistant = run(speak_once(port, "nobody"))
    assert isinstance(refused_in_home_assistant, Error) and refused_in_home_assistant.code == "not_found"


def test_a_mistake_outside_synthesize_keeps_the_connection(served):
    _url, port, _app = served

    async def mistakes():
        async with AsyncTcpClient("127.0.0.1", port) as client:
            answers = []
            for event in (SynthesizeChunk(text="Outside a stream.").event(), SynthesizeStop().event()):
                await client.write_event(event)
                answers.append(Error.from_event(await client.read_event()))
            client._writer.write(_line("ping", {"text": "\ud800"}))  # not echoed: it cannot be sent back
            answers.append(Pong.from_event(await client.read_event()))
            answers.append(await ha_get_tts_audio(client, "Still here.", "英文女"))
            return answers

    chunk, stop, pong, still = run(mistakes())
    assert (chunk.code, chunk.text) == ("invalid", "synthesize-chunk outside a stream: send synthesize-start first")
    assert stop.text.startswith("synthesize-stop outside a stream") and pong.text is None
    assert samples_of(still)[0].size > 0


def test_without_a_voice_it_speaks_the_first_that_speaks_the_language(served):
    url, port, _app = served

    async def by_language():
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(language="en")).event())
            chunks = []
            while not AudioStop.is_type((event := await client.read_event()).type):
                if AudioChunk.is_type(event.type):
                    chunks.append(AudioChunk.from_event(event).audio)
            return b"".join(chunks)

    np.testing.assert_array_equal(np.frombuffer(run(by_language()), "<i2"), pcm_of(url, "Hello.", "英文女"))


# -- streaming -----------------------------------------------------------------------------------------------


def test_home_assistants_streaming_speaks_sentence_by_sentence(served):
    url, port, _app = served
    pieces = ["The first sen", "tence is here. The second", " one follows it! Is this the", " third?"]
    seen, wav_bytes = run(ha_stream_tts_audio(port, pieces, "英文男"))
    assert seen.count("audio-start") == 3 and seen.count("audio-stop") == 3  # three sentences, the copy ignored
    assert seen[-1] == "synthesize-stopped"
    samples, rate = samples_of(wav_bytes)
    sentences = ["The first sentence is here.", "The second one follows it!", "Is this the third?"]
    expected = np.concatenate([pcm_of(url, sentence, "英文男") for sentence in sentences])
    assert rate == 24000
    np.testing.assert_array_equal(samples, expected)


def test_a_sentence_is_spoken_before_the_stream_ends(served):
    _url, port, _app = served

    async def first_sentence_first():
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="英文女")).event())
            await client.write_event(SynthesizeChunk(text="A whole sentence. And the start of").event())
            first = [(await client.read_event()).type for _ in range(2)]
            await client.write_event(SynthesizeChunk(text=" another").event())
            await client.write_event(SynthesizeStop().event())
            rest = []
            while not SynthesizeStopped.is_type((event := await client.read_event()).type):
                rest.append(event.type)
            return first, rest

    first, rest = run(first_sentence_first())
    assert first == ["audio-start", "audio-chunk"]  # before the client had sent the rest of the text
    assert rest.count("audio-start") == 1 and rest[-1] == "audio-stop"


def test_a_stream_with_an_unknown_voice_fails_once_and_still_ends(served):
    _url, port, _app = served
    seen, _ = run(ha_stream_tts_audio_errors(port))
    assert seen == ["error", "synthesize-stopped", "pong"]


async def ha_stream_tts_audio_errors(port: int):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
        await client.write_event(SynthesizeChunk(text="Nothing of this is spoken. Nor this.").event())
        await client.write_event(SynthesizeStop().event())
        await client.write_event(Ping(text="still there?").event())
        seen = []
        while not Pong.is_type((event := await client.read_event()).type):
            seen.append(event.type)
        seen.append(event.type)
        return seen, None


# -- clients that leave, and bytes that are not events -------------------------------------------------------


def test_a_client_that_leaves_mid_stream_frees_its_synthesis(served):
    _url, port, app = served
    synthesizer = app.state.speech.synthesizer

    async def leave_early():
        for _ in range(3):
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="英文女")).event())
                await client.write_event(SynthesizeChunk(text=" ".join([STORY] * 40) + " And").event())
                assert AudioStart.is_type((await client.read_event()).type)
        for _ in range(100):
            if synthesizer.active == 0:
                break
            await asyncio.sleep(0.05)
        async with AsyncTcpClient("127.0.0.1", port) as client:  # the door still answers
            return await ha_get_tts_audio(client, "Hello again.", "英文女")

    assert samples_of(run(leave_early()))[0].size > 0
    deadline = time.monotonic() + 10
    while synthesizer.active and time.monotonic() < deadline:  # the last one ends in a callback of its thread
        time.sleep(0.05)
    assert synthesizer.active == 0


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"this is not json\n", "the event's header is not JSON"),
        (b"[1, 2, 3]\n", "the event's header is not a JSON object"),
        (b'{"data": {"text": "no type"}}\n', "the event header has no type"),
        (b'{"type": "synthesize", "data": "text"}\n', "the event's data is not a JSON object"),
        (b'{"type": "synthesize", "data_length": -1}\n', "data_length: -1 is not a length"),
        (b'{"type": "synthesize", "data_length": 99999999999}\n', "data_length: 99999999999 bytes; the limit"),
        (b'{"type": "audio-chunk", "payload_length": "many"}\n', "payload_length: 'many' is not a length"),
        (b'{"type": "synthesize", "data_length": 4}\nnope', "the event's data is not JSON"),
        (b'{"type": "synthesize", "data_length": 2}\n\xff\xfe', "the event's data is not JSON"),
        (b'{"type": "' + b"x" * 70_000 + b'"}\n', "an event header longer than 64 KiB"),
        (b"[" * 60_000 + b"\n", "the event's header is nested too deeply"),
    ],
)
def test_bytes_that_are_not_events_get_an_error_and_the_connection_closes(served, raw, problem):
    _url, port, _app = served

    async def send_raw():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        answer = await reader.read()  # everything until the server closes
        writer.close()
        return answer

    answer = run(send_raw())
    header, _, rest = answer.partition(b"\n")
    assert b'"type": "error"' in header and problem.encode() in rest, answer[:300]
    assert b'"code": "malformed"' in rest


def test_unknown_events_are_ignored(served):
    _url, port, _app = served

    async def odd_events():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'{"type": "transcribe", "data": {"language": "en"}}\n')
        writer.write(b'{"type": "audio-chunk", "data": {"rate": 16000}, "payload_length": 4}\nabcd')
        writer.write(b'{"type": "ping", "data": {"text": "hi"}}\n')
        await writer.drain()
        line = await reader.readline()
        writer.close()
        return line

    assert b'"pong"' in run(odd_events())


def test_a_client_that_keeps_sending_after_a_bad_event_still_gets_the_error(served):
    _url, port, _app = served

    async def flood():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"not an event\n" + b'{"type": "ping"}\n' * 2000)
        with contextlib.suppress(ConnectionError):  # the server may close before it has read it all
            await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer

    for _ in range(5):
        answer = run(flood())
        assert b'"malformed"' in answer and b"pong" not in answer


def test_an_idle_connection_is_closed_a_stream_waiting_for_text_too(served, monkeypatch):
    _url, port, _app = served
    monkeypatch.setattr(session, "IDLE_SECONDS", 0.3)

    async def idle(first: bytes):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    assert run(idle(b"")) == b""
    assert run(idle(_line("synthesize-start", {"voice": {"name": "英文女"}}))) == b""


def test_a_client_that_stops_reading_is_let_go_quietly(served, monkeypatch):
    """A write that does not finish within WRITE_SECONDS ends the connection without a word in the log (here
    every write: 0 s); the synthesis it was sending stops."""
    _url, port, app = served
    monkeypatch.setattr(session, "WRITE_SECONDS", 0)

    async def never_reads():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_line("synthesize", {"text": " ".join([STORY] * 20), "voice": {"name": "英文女"}}))
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return received

    assert b'"audio-stop"' not in run(never_reads())
    deadline = time.monotonic() + 10
    while app.state.speech.synthesizer.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.speech.synthesizer.active == 0
