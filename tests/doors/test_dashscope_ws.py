"""DashScope's CosyVoice WebSocket protocol, driven by the official `dashscope` SDK (tts_v2.SpeechSynthesizer) and,
for what the SDK never sends (binary frames, broken JSON, idle gaps, several tasks in turn), by raw frames."""

import contextlib
import json
import logging
import threading
import time
import uuid

import dashscope
import numpy as np
import pytest
from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer
from dashscope.common.error import RequestFailure
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.audio import decode, decode_pcm, decoder_slack
from tests.support.dashscope import Recorder
from tests.support.logs import loud, recording_logs
from tests.support.server import last_engine_seconds, live_server, long_settings
from tests.support.speech import SENTENCE

dashscope.api_key = "not-checked"  # the SDK refuses to start without one; this server does not check it yet


@pytest.fixture
def served(tmp_path):
    with live_server(long_settings(tmp_path, dashscope_idle_seconds=1.5)) as (url, app):
        yield url.replace("http://", "ws://") + "/api-ws/v1/inference", app


def _decoded(fmt: AudioFormat, audio: bytes):
    name, rate = fmt.format, fmt.sample_rate
    return decode_pcm(audio, rate) if name == "pcm" else decode(audio)


@pytest.mark.parametrize("fmt", [f for f in AudioFormat if f is not AudioFormat.DEFAULT], ids=lambda f: f.name)
def test_call_answers_every_format_and_rate(served, fmt):
    url, app = served
    synthesizer = SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun_v2", format=fmt, url=url)
    audio = synthesizer.call("Hello there, this is one sentence.")
    got = _decoded(fmt, audio)
    expected = last_engine_seconds(app) * got.rate
    assert got.rate == (48000 if fmt.format == "opus" else fmt.sample_rate)
    assert expected > 0 and abs(got.samples.size - expected) <= decoder_slack(fmt.format, got.rate) + 0.002 * expected


def test_the_default_format_is_mp3_at_22050(served):
    url, _app = served
    audio = SpeechSynthesizer(model="cosyvoice-v2", voice="longanyang", url=url).call("Hello.")
    assert audio[:3] == b"ID3" or audio[0] == 0xFF
    assert decode(audio).rate == 22050


def test_streaming_speaks_each_sentence_while_more_text_arrives(served):
    url, _app = served
    recorder = Recorder()
    synthesizer = SpeechSynthesizer(
        model="cosyvoice-v2",
        voice="longxiaochun_v2",
        format=AudioFormat.WAV_24000HZ_MONO_16BIT,
        callback=recorder,
        url=url,
    )
    for piece in ["The first sen", "tence is here. ", "And the sec"]:
        synthesizer.streaming_call(piece)
    assert recorder.first_audio.wait(30), "no audio before the last text was sent"
    synthesizer.streaming_call("ond one ends now.")
    synthesizer.streaming_complete()
    assert recorder.error is None and recorder.done.is_set()
    outputs = [e["payload"]["output"] for e in recorder.events]
    begins = [o["original_text"] for o in outputs if o["type"] == "sentence-begin"]
    ends = [o for o in outputs if o["type"] == "sentence-end"]
    assert begins == ["The first sentence is here.", "And the second one ends now."]
    assert [e["sentence"]["index"] for e in ends] == [0, 1]
    assert recorder.events[-1]["payload"]["usage"]["characters"] == len("".join(begins))
    wav = decode(bytes(recorder.audio))  # the task's audio is one valid WAV stream
    assert wav.rate == 24000 and wav.seconds > 2


def test_chinese_characters_count_twice(served):
    url, _app = served
    recorder = Recorder()
    synthesizer = SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun", callback=recorder, url=url)
    synthesizer.streaming_call("你好，世界。")
    synthesizer.streaming_complete()
    ends = [e for e in recorder.events if e["payload"]["output"]["type"] == "sentence-end"]
    assert ends[-1]["payload"]["usage"]["characters"] == 2 * 4 + 2


def test_an_unknown_voice_fails_the_task_with_a_reason(served):
    url, _app = served
    synthesizer = SpeechSynthesizer(model="cosyvoice-v2", voice="nobody_v9", url=url)
    with pytest.raises(RequestFailure) as failure:
        synthesizer.call("Hello.")
    assert failure.value.name == "InvalidParameter"
    assert failure.value.message.startswith("voice: no voice named 'nobody_v9'")


def test_volume_and_pitch_are_honoured(served):
    url, _app = served
    fmt = AudioFormat.PCM_24000HZ_MONO_16BIT

    def speak(**options) -> np.ndarray:
        synthesizer = SpeechSynthesizer(model="cosyvoice-v2", voice="loongstella", format=fmt, url=url, **options)
        return decode_pcm(synthesizer.call("Hello there, how are you today?"), 24000)

    normal, loud, high = speak(), speak(volume=100), speak(pitch_rate=1.5)
    assert 1.7 < loud.rms / normal.rms < 2.05
    assert abs(high.seconds - normal.seconds) < 0.05 * normal.seconds
    assert 1.35 < high.median_f0() / normal.median_f0() < 1.65


# -- raw frames: what the SDK never sends ----------------------------------------------------------


def _run_task(task_id: str, **parameters) -> str:
    params = {"voice": "longxiaochun_v2", "format": "pcm", "sample_rate": 24000, **parameters}
    payload = {"model": "cosyvoice-v2", "task_group": "audio", "task": "tts", "function": "SpeechSynthesizer"}
    frame = {"header": {"action": "run-task", "task_id": task_id, "streaming": "duplex"}}
    return json.dumps({**frame, "payload": {**payload, "parameters": params, "input": {}}})


def _action(action: str, task_id: str, **task_input) -> str:
    return json.dumps(
        {"header": {"action": action, "task_id": task_id, "streaming": "duplex"}, "payload": {"input": task_input}}
    )


def _events_until(ws, *ends: str, timeout: float = 30) -> tuple[list[dict], bytes]:
    events, audio = [], b""
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            assert message, "an empty binary frame"
            audio += message
            continue
        event = json.loads(message)
        events.append(event)
        if event["header"]["event"] in ends:
            return events, audio


def test_several_tasks_in_turn_on_one_connection(served):
    url, _app = served
    with connect(url) as ws:
        for n in range(2):
            task_id = uuid.uuid4().hex
            ws.send(_run_task(task_id))
            ws.send(_action("continue-task", task_id, text=f"Task number {n} speaks."))
            ws.send(_action("finish-task", task_id))
            events, audio = _events_until(ws, "task-finished", "task-failed")
            assert [e["header"]["event"] for e in events][0] == "task-started"
            assert events[-1]["header"]["event"] == "task-finished" and len(audio) > 24000
            assert {e["header"]["task_id"] for e in events} == {task_id}


@pytest.mark.parametrize("fmt", ["mp3", "opus", "wav", "pcm"])
def test_a_task_with_nothing_to_say_finishes_in_every_format(served, fmt):
    url, _app = served
    with recording_logs() as logs, connect(url) as ws:
        for task_id, text in (("silent", "..."), ("empty", None)):
            ws.send(_run_task(task_id, format=fmt))
            if text is not None:
                ws.send(_action("continue-task", task_id, text=text))
            ws.send(_action("finish-task", task_id))
            events, _audio = _events_until(ws, "task-finished", "task-failed")
            assert events[-1]["header"]["event"] == "task-finished", events[-1]
            assert events[-1]["payload"]["usage"] == {"characters": 0}
    assert not loud(logs), loud(logs)


def test_control_characters_are_spoken_around(served):
    url, _app = served
    with recording_logs() as logs, connect(url) as ws:
        ws.send(_run_task("ctl", format="mp3"))
        ws.send(_action("continue-task", "ctl", text="A \u0007 bell, \u0000 a nul and \u001b[31m an escape. Done."))
        ws.send(_action("finish-task", "ctl"))
        events, audio = _events_until(ws, "task-finished", "task-failed")
    assert events[-1]["header"]["event"] == "task-finished" and decode(audio).seconds > 1
    assert not loud(logs), loud(logs)


@pytest.mark.parametrize(
    ("frames", "code", "message"),
    [
        ([b"\x00\x01"], "InvalidParameter", "binary frames are not accepted"),
        (["{not json"], "InvalidParameter", "message: not valid JSON"),
        (['{"header": {"action": "dance", "task_id": "t"}}'], "InvalidParameter", "header.action: "),
        ([_run_task("t", volume=101)], "InvalidParameter", "payload.parameters.volume: "),
        ([_run_task("t", format="aiff")], "InvalidParameter", "payload.parameters.format: "),
        ([_run_task("t", sample_rate=12345)], "InvalidParameter", "payload.parameters.sample_rate: "),
        ([_run_task("t"), _action("continue-task", "t", text="x" * 20_001)], "InvalidParameter", "input.text: 20001"),
        ([_run_task("t"), _action("continue-task", "other", text="Hi.")], "InvalidParameter", "header.task_id: "),
        (
            [_run_task("t"), _action("continue-task", "t", text="Hi \ud800 there.")],
            "InvalidParameter",
            "text: contains an invalid character (an unpaired surrogate)",
        ),
    ],
)
def test_bad_frames_fail_the_task_with_a_reason(served, frames, code, message):
    url, _app = served
    with connect(url) as ws:
        for frame in frames:
            ws.send(frame)
        events, _ = _events_until(ws, "task-failed")
        failed = events[-1]["header"]
        assert failed["error_code"] == code and failed["error_message"].startswith(message), failed
        # the connection stays usable for the next task, once "t" has ended if it still runs
        if message.startswith("header.task_id"):
            ws.send(_action("finish-task", "t"))
            assert _events_until(ws, "task-finished")[0][-1]["header"]["task_id"] == "t"
        ws.send(_run_task("next"))
        assert _events_until(ws, "task-started")[0][-1]["header"]["task_id"] == "next"


def test_an_idle_task_fails_instead_of_hanging(served):
    url, _app = served
    with connect(url) as ws:
        ws.send(_run_task("idle"))
        started = time.monotonic()
        events, _ = _events_until(ws, "task-failed", timeout=10)
        assert events[-1]["header"]["error_code"] == "RequestTimeOut"
        assert 1.4 < time.monotonic() - started < 5


def test_a_client_that_leaves_stops_synthesis(served):
    url, app = served
    synth = app.state.speech.synthesizer
    with connect(url) as ws:
        ws.send(_run_task("long"))
        ws.send(_action("continue-task", "long", text=SENTENCE * 200))
        ws.send(_action("finish-task", "long"))
        while not isinstance(ws.recv(timeout=30), bytes):
            pass
    deadline = time.monotonic() + 10
    while synth.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert synth.active == 0 and synth.stats.cancelled == 1
    assert synth.stats.completed < 20  # of the 200 sentences


def test_a_failing_engine_fails_the_task_instead_of_leaving_the_sdk_waiting(served):
    url, app = served
    engine = app.state.speech.engine
    real = engine.synthesize

    def broken(request):
        chunks = real(request)
        yield next(chunks)
        raise RuntimeError("injected engine failure")

    engine.synthesize = broken
    outcome: dict = {}

    def call():
        try:
            SpeechSynthesizer(model="cosyvoice-v2", voice="longanyang", url=url).call("Hello there, one sentence.")
        except RequestFailure as exc:
            outcome["failure"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "call() still waits: the task ended with neither task-finished nor task-failed"
    assert outcome["failure"].name == "InternalError"
    assert outcome["failure"].message == "synthesis failed; the server log has the details"


def test_finished_and_cancelled_connections_are_closed_when_idle(served, monkeypatch):
    from websockets.exceptions import ConnectionClosed

    from app.api.dashscope import ws as door

    url, _app = served
    monkeypatch.setattr(door, "NO_TASK_IDLE_SECONDS", 1.0)
    for ending in ("finish-task", "cancel"):
        with connect(url) as ws:
            ws.send(_run_task("t"))
            ws.send(_action("continue-task", "t", text="Hello there. " * (1 if ending == "finish-task" else 50)))
            if ending == "cancel":
                _events_until(ws, "task-started")
                ws.send(_action("finish-task", "t", directive="cancel"))
            else:
                ws.send(_action("finish-task", "t"))
            assert _events_until(ws, "task-finished")[0][-1]["header"]["task_id"] == "t"
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=5)
            assert time.monotonic() - started < 3, ending


def test_clients_that_leave_at_any_moment_leave_no_traceback(served):
    url, app = served
    with recording_logs() as records:
        for frames in ([_run_task("a")], [_run_task("b"), _action("continue-task", "b", text=SENTENCE * 20)]):
            with connect(url) as ws:
                for frame in frames:
                    ws.send(frame)
            time.sleep(0.5)
        synth = app.state.speech.synthesizer
        deadline = time.monotonic() + 10
        while synth.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert synth.active == 0
    errors = loud(records)
    assert not errors, errors


def test_clients_that_vanish_mid_audio_are_not_warned_about(served):
    """A client whose connection is gone while its audio is being written (no close frame: the socket dies) is the
    client's business: no asyncio warning per connection (without the filter: several per drop)."""
    import socket

    url, app = served
    with recording_logs() as records:
        for n in range(30):
            with contextlib.suppress(OSError, ConnectionClosed), connect(url) as ws:
                ws.send(_run_task(f"v{n}", format="pcm"))
                ws.send(_action("continue-task", f"v{n}", text=SENTENCE * 30))
                while not isinstance(ws.recv(timeout=10), bytes):  # until the audio flows
                    pass
                ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                ws.socket.close()  # a reset, as a phone losing its network
        synth = app.state.speech.synthesizer
        deadline = time.monotonic() + 20
        while synth.active and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    warned = [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert not warned, warned
    assert not loud(records), loud(records)
