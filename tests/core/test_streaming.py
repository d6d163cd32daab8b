"""Streaming under a real server: early first bytes, disconnects stop synthesis, the loop stays free."""

import concurrent.futures
import contextlib
import time

import httpx

from tests.support.audio import decode
from tests.support.server import live_server, long_settings
from tests.support.speech import SENTENCE


def test_disconnect_mid_stream_stops_synthesis(tmp_path):
    text = SENTENCE * 400  # about 40 minutes of speech if it ran to the end
    with live_server(long_settings(tmp_path)) as (url, app):
        synth = app.state.speech.synthesizer
        with httpx.stream("POST", f"{url}/tts", json={"tts_text": text, "spk_id": "英文男"}, timeout=30) as response:
            assert response.status_code == 200
            first = next(response.iter_bytes())
            assert first
        deadline = time.monotonic() + 10
        while synth.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert synth.active == 0, "synthesis still running after the client left"
        assert synth.stats.cancelled == 1 and synth.stats.completed == 0
        assert synth.stats.audio_seconds < 600, synth.stats.audio_seconds  # far from the ~2400 s of the text
        # the slot is free again: a new request is served at once
        response = httpx.post(f"{url}/tts", json={"tts_text": "Still here.", "spk_id": "英文女"}, timeout=30)
        assert decode(response.content).seconds > 0.5


def test_health_answers_promptly_while_streams_synthesize(tmp_path):
    text = SENTENCE * 50
    with live_server(long_settings(tmp_path, max_concurrency=2)) as (url, app):

        def stream_all() -> float:
            body = {"tts_text": text, "spk_id": "中文男"}
            response = httpx.post(f"{url}/tts", json=body, timeout=120)
            return decode(response.content).seconds

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            streams = [pool.submit(stream_all) for _ in range(3)]
            busy_seen, slowest = 0, 0.0
            while not all(f.done() for f in streams):
                started = time.perf_counter()
                health = httpx.get(f"{url}/health", timeout=10).json()
                slowest = max(slowest, time.perf_counter() - started)
                busy_seen = max(busy_seen, health["active_syntheses"])
                time.sleep(0.05)
            durations = [f.result() for f in streams]
        assert busy_seen >= 1, "health never saw a synthesis running"
        assert busy_seen <= 2, "more syntheses ran than max_concurrency allows"
        # a blocked event loop would hold /health for a whole synthesis (tens of seconds); the margin is for
        # a machine busy with other work (make test runs three test processes on two cores)
        assert slowest < 2.0, f"/health took {slowest:.2f} s while streams were running"
        assert all(d > 150 for d in durations)


def test_first_bytes_arrive_long_before_the_stream_ends(tmp_path):
    text = SENTENCE * 100
    with live_server(long_settings(tmp_path)) as (url, _app):
        started = time.perf_counter()
        with httpx.stream("POST", f"{url}/tts", json={"tts_text": text, "spk_id": "英文女"}, timeout=60) as response:
            chunks = response.iter_bytes()
            next(chunks)
            first_byte = time.perf_counter() - started
            total = sum(len(c) for c in chunks)
        finished = time.perf_counter() - started
    assert total > 500_000
    assert first_byte < finished / 5, (first_byte, finished)


def test_busy_server_answers_429_when_no_slot_frees_in_time(tmp_path):
    text = SENTENCE * 400
    settings = long_settings(tmp_path, max_concurrency=1, queue_timeout_seconds=0.2)
    with (
        live_server(settings) as (url, _app),
        httpx.stream("POST", f"{url}/tts", json={"tts_text": text, "spk_id": "英文男"}, timeout=30) as held,
    ):
        unread = held.iter_bytes()  # keep a reference: dropping the iterator closes the connection
        next(unread)  # holds the only slot: the client reads no further
        response = httpx.post(f"{url}/tts", json={"tts_text": "hello", "spk_id": "英文女"}, timeout=30)
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "busy" and "0.2 s" in response.json()["error"]["message"]
        assert 'cosyvoice_rejected_total{reason="timeout"} 1.0' in httpx.get(f"{url}/metrics").text


def test_disconnect_during_a_wav_render_stops_synthesis(tmp_path):
    """stream=False renders the whole WAV first; a client that leaves meanwhile still stops it."""
    text = SENTENCE * 1000
    with live_server(long_settings(tmp_path)) as (url, app):
        synth = app.state.speech.synthesizer
        body = {"mode": "预训练音色", "tts_text": text, "spk_id": "英文男", "stream": "False"}
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{url}/generate_audio", json=body, timeout=0.5)
        deadline = time.monotonic() + 10
        while synth.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert synth.active == 0 and synth.stats.cancelled == 1, synth.stats


def test_a_client_that_stops_reading_loses_its_slot_after_the_stall_timeout(tmp_path):
    text = SENTENCE * 400
    settings = long_settings(tmp_path, max_concurrency=1, stall_timeout_seconds=1.0)
    with (
        live_server(settings) as (url, app),
        httpx.stream("POST", f"{url}/tts", json={"tts_text": text, "spk_id": "英文男"}, timeout=30) as held,
    ):
        unread = held.iter_bytes()
        next(unread)  # connected, but reads nothing more
        deadline = time.monotonic() + 20
        while app.state.speech.synthesizer.active and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.state.speech.synthesizer.stats.cancelled == 1
        response = httpx.post(f"{url}/tts", json={"tts_text": "Next please.", "spk_id": "英文女"}, timeout=30)
        assert decode(response.content).seconds > 0.5
