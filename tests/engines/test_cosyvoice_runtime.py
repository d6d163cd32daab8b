"""The CosyVoice contract, part 2: how requests run on the real engine (same lanes as part 1).

Seeds, speed, sentence-by-sentence streaming, concurrent requests, a client leaving mid-stream and a
failing LLM stage, each through HTTP.
"""

import concurrent.futures
import json
import logging
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.support.audio import audible, decode
from tests.support.doors import clone, error_of
from tests.support.server import last_record, live_server
from tests.support.speech import EN_PROMPT, ENGINE_RATE, TWO_SENTENCES, ZH_TEXT


def _generate(client, spk_id: str, **extra):
    body = {"mode": "3s极速复刻", "tts_text": ZH_TEXT, "spk_id": spk_id, "stream": "False", **extra}
    return client.post("/generate_audio", json=body)


def test_same_seed_same_audio(cv, male_prompt):
    clone(cv, "seeded", male_prompt)
    first, second, other = (_generate(cv, "seeded", seed=seed).content for seed in (11, 11, 12))
    assert first == second
    assert first != other
    assert decode(first).seconds > 0.2


def test_speed_shortens_the_same_utterance(cv, male_prompt):
    clone(cv, "paced", male_prompt)
    normal = audible(_generate(cv, "paced", seed=5))
    fast = audible(_generate(cv, "paced", seed=5, speed=1.5))
    assert fast.seconds == pytest.approx(normal.seconds / 1.5, rel=0.05)
    streamed = audible(_generate(cv, "paced", seed=5, speed=1.5, stream="True"))  # speed unstreams the engine
    assert streamed.seconds == pytest.approx(fast.seconds, abs=0.1)


def test_long_text_is_spoken_sentence_by_sentence(cv, male_prompt, lane):
    """Upstream splits text only when it normalises it, and CosyVoice3's marker switches that off:
    the adapter splits first, so the first audio leaves after the first sentence even without streaming."""
    engine = cv.app.state.speech.engine
    pieces = engine._texts(TWO_SENTENCES, needs_mark=lane.generation == 3)
    assert len(pieces) == 2
    assert all(piece.startswith("You are a helpful assistant.<|endofprompt|>") for piece in pieces) == (
        lane.generation == 3
    )
    audible(cv.post("/tts", json={"tts_text": TWO_SENTENCES, "spk_id": "中文女", "stream": False}))
    record = last_record(cv.app)
    assert record.outcome == "completed" and 0 < record.first_chunk_samples < record.samples


def test_concurrent_streams_keep_their_own_state(cv_settings, male_prompt):
    """Three overlapping streams complete; each grows its own chunks (upstream's model object grows one hop
    length for every request and never resets it)."""
    with live_server(cv_settings) as (url, app):
        synth = app.state.speech.synthesizer
        files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
        httpx.post(f"{url}/clone", data={"spk_id": "s", "prompt_text": EN_PROMPT}, files=files, timeout=120)

        def stream(seed: int):
            body = {"mode": "3s极速复刻", "tts_text": ZH_TEXT, "spk_id": "s", "stream": "True", "seed": seed}
            return decode(httpx.post(f"{url}/generate_audio", json=body, timeout=300).content)

        stream(0)
        first = last_record(app)
        most_at_once = 0
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(stream, seed) for seed in (1, 2, 3)]
            while not all(f.done() for f in futures):
                most_at_once = max(most_at_once, synth.active)
                time.sleep(0.02)
        for future in futures:
            decoded = future.result()
            assert decoded.rate == ENGINE_RATE and decoded.seconds > 0.5 and np.isfinite(decoded.samples).all()
        stream(0)
        last = last_record(app)
        assert most_at_once == 3
        assert [r.outcome for r in synth.recent] == ["completed"] * 5
        assert first.samples > first.first_chunk_samples  # it really streamed in several chunks
        assert last.first_chunk_samples == first.first_chunk_samples  # the hop length did not creep
        assert _no_llm_threads()


def test_a_client_leaving_mid_stream_stops_the_llm_stage(cv_settings):
    with live_server(cv_settings) as (url, app):
        body = {"tts_text": TWO_SENTENCES, "spk_id": "中文女"}
        with httpx.stream("POST", f"{url}/tts", json=body, timeout=120) as response:
            assert next(response.iter_raw())
        synth = app.state.speech.synthesizer
        deadline = time.monotonic() + 30
        while (synth.active or _llm_threads()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert synth.active == 0 and synth.stats.cancelled == 1
        assert _no_llm_threads()


@pytest.mark.parametrize("stream", [True, False])
def test_a_failing_llm_stage_is_a_json_error_naming_the_cause(cv, monkeypatch, caplog, stream):
    norm = cv.app.state.speech.engine.pipeline.lm.llm.llm.model.model.norm  # the Qwen2 model's last layer
    original, steps = norm.forward, []

    def failing(*args, **kwargs):  # the Qwen2 model fails at its 4th step (a prefill or a decode step)
        steps.append(1)
        if len(steps) == 4:
            raise RuntimeError("injected LLM failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(norm, "forward", failing)
    body = {"tts_text": ZH_TEXT, "spk_id": "中文女", "stream": stream}
    with caplog.at_level(logging.ERROR):
        response = cv.post("/tts", json=body)
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "engine_error" and "RuntimeError: injected LLM failure" in error["message"]
    assert "the LLM stage failed: RuntimeError: injected LLM failure" in caplog.text
    monkeypatch.undo()
    audible(cv.post("/tts", json=body))  # the engine serves the next request
    assert _no_llm_threads()


def test_the_seed_endpoints_stream_from_the_engine_by_default(cv):
    for stream, several_chunks in ((None, True), (False, False)):
        body = {"tts_text": ZH_TEXT, "spk_id": "中文女"} | ({} if stream is None else {"stream": stream})
        audible(cv.post("/tts", json=body))
        record = last_record(cv.app)
        assert (record.first_chunk_samples < record.samples) == several_chunks, (stream, record)


def test_concurrent_requests_run_inside_the_engine_at_the_same_time(cv_settings, monkeypatch):
    """The vocoding steps of different requests overlap (a lock around them would serialise them)."""
    with live_server(cv_settings) as (url, app):
        pipeline = app.state.speech.engine.pipeline
        original, spans = pipeline._vocode, []

        def slow_vocode(*args, **kwargs):
            started = time.monotonic()
            time.sleep(0.3)  # widen each step, so that steps which may overlap do
            try:
                return original(*args, **kwargs)
            finally:
                spans.append((started, time.monotonic(), threading.get_ident()))

        monkeypatch.setattr(pipeline, "_vocode", slow_vocode)
        body = {"tts_text": ZH_TEXT, "spk_id": "中文女"}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: audible(httpx.post(f"{url}/tts", json=body, timeout=300)), range(3)))
    overlapping = [
        (a, b) for a in spans for b in spans if a[2] != b[2] and a[0] < b[0] < a[1]
    ]  # a step of one request began while another request's step was running
    assert overlapping, spans


def test_a_client_leaving_before_the_first_byte_ends_the_llm_at_its_next_token(cv_settings, monkeypatch):
    """With stream=false the first byte waits for the whole sentence; a client that leaves before it
    must not keep the LLM busy until then."""
    with live_server(cv_settings) as (url, app):
        from app.engines.cosyvoice.llm import TokenStream

        synth, original, tokens = app.state.speech.synthesizer, TokenStream.put, []

        def counting(stream, token):
            tokens.append(token)
            time.sleep(0.02)  # a step of a real model, not the tiny one's 1 ms
            original(stream, token)

        monkeypatch.setattr(TokenStream, "put", counting)
        sentence = TWO_SENTENCES.split(". ")[0] + "."
        body = json.dumps({"tts_text": sentence, "spk_id": "英文男", "stream": False}).encode()
        host, port = url.removeprefix("http://").split(":")
        client = socket.create_connection((host, int(port)))
        client.sendall(
            b"POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 30
        while len(tokens) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        client.close()
        while (synth.active or _llm_threads()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert synth.active == 0 and not _llm_threads() and synth.stats.cancelled == 1
        # upstream decodes at least 2 speech tokens per text token (here one per UTF-8 byte) before it may stop
        assert 5 <= len(tokens) < 2 * len(sentence.encode()), len(tokens)


def _llm_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "cosyvoice-llm"]


def _no_llm_threads(within: float = 5.0) -> bool:
    """No LLM thread is left (the batching scheduler's ends once it has no request, a moment after the last)."""
    deadline = time.monotonic() + within
    while _llm_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _llm_threads()
