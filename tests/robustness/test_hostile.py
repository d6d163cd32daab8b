"""Hostile bodies against every POST endpoint of every door: a 4xx in that door's shape, quickly, no traceback."""

import base64
import io
import logging
import socket
import time

import av
import httpx
import numpy as np
import pytest

from tests.support.audio import wav
from tests.support.doors import DASHSCOPE, OPENAI, RUNTIME, SEED, dashscope_error, error_of, openai_error, runtime_error
from tests.support.logs import logged, loud, recording_logs
from tests.support.server import live_server, long_settings
from tests.support.speech import EN_PROMPT, SENTENCE

TIME_BOUND = 5.0  # seconds: every refusal here is cheap

# raw bodies, the same for every endpoint (a valid-looking start, then the hostile part)
HUGE_INT = b'{"tts_text": "hi", "input": "hi", "seed": ' + b"9" * 5000 + b"}"
DEEP = b'{"tts_text": "hi", "input": "hi", "spk_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NOT_UTF8_JSON = b'{"tts_text": "\xff\xfe", "input": "\xff\xfe"}'


def _post(client, path: str, method: str = "POST", **request):
    started = time.perf_counter()
    response = client.request(method, path, **request)
    elapsed = time.perf_counter() - started
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
    assert elapsed < TIME_BOUND, (path, elapsed)
    shape = openai_error if path.startswith("/v1/") else runtime_error if path in RUNTIME else error_of
    shape = dashscope_error if path in DASHSCOPE else shape
    shape(response)
    return response


@pytest.fixture
def quiet(caplog):
    """Fails the test if anything was logged at ERROR or with a traceback."""
    caplog.set_level(logging.INFO)
    yield
    errors = loud(logged(caplog))
    assert not errors, errors


JSON = {"headers": {"content-type": "application/json"}}


@pytest.mark.parametrize("path", SEED + OPENAI + RUNTIME + DASHSCOPE)
@pytest.mark.parametrize(
    ("name", "body"),
    [("huge integer", HUGE_INT), ("deep nesting", DEEP), ("invalid UTF-8", NOT_UTF8_JSON), ("a list", b"[1, 2]")],
)
def test_hostile_json(client, quiet, path, name, body):
    response = _post(client, path, content=body, **JSON)
    if path in RUNTIME:  # its bodies are forms: JSON is not read at all
        assert runtime_error(response)["detail"].startswith("tts_text: Field required"), name
        return
    if path in DASHSCOPE:
        error = dashscope_error(response)
    else:
        error = openai_error(response) if path.startswith("/v1/") else error_of(response)
    assert error["message"].startswith("body:"), (name, error)


@pytest.mark.parametrize("path", SEED)
@pytest.mark.parametrize(
    "fields",
    [
        {"tts_text": 5, "spk_id": "中文女"},
        {"tts_text": "hi", "spk_id": "中文女", "speed": True},
        {"tts_text": "hi", "spk_id": "中文女", "seed": True},
        {"tts_text": "hi", "spk_id": "中文女", "speed": "fast"},
        {"tts_text": "hi", "spk_id": "中文女", "seed": -1},
        {"tts_text": "hi", "spk_id": "中文女", "speed": 1e308},
        {"tts_text": "x" * 6000, "spk_id": "中文女"},
    ],
)
def test_wrong_types_and_sizes_in_seed_fields(client, quiet, path, fields):
    _post(client, path, json={**fields, "prompt_text": "x", "instruct_text": "x", "mode": fields.get("mode", "sft")})


@pytest.mark.parametrize("mode", [["预训练音色"], 1, None, "预训练"])
def test_wrong_modes(client, quiet, mode):
    response = _post(client, "/generate_audio", json={"tts_text": "hi", "spk_id": "中文女", "mode": mode})
    assert error_of(response)["message"].startswith("mode:")


@pytest.mark.parametrize(
    "fields",
    [
        {"input": 5},
        {"speed": True},
        {"speed": "fast"},
        {"voice": {"name": "alloy"}},
        {"voice": ["alloy"]},
        {"response_format": None},
        {"input": "x" * 4097},
        {"sample_rate": True},
    ],
)
def test_wrong_types_and_sizes_in_openai_fields(client, quiet, fields):
    _post(client, "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "hi", **fields})


@pytest.mark.parametrize("path", SEED)
def test_invalid_utf8_in_form_fields_is_refused_not_read_as_latin1(client, quiet, path):
    fields = {"spk_id": "中文女", "mode": "sft", "prompt_text": "x", "instruct_text": "x"}
    multipart = _post(client, path, data=fields, files={"tts_text": (None, b"caf\xe9 \xff")})
    assert error_of(multipart)["message"] == "tts_text: not valid UTF-8 text"
    urlencoded = _post(
        client,
        path,
        content=b"tts_text=caf%E9&spk_id=%E4%B8%AD%E6%96%87%E5%A5%B3&mode=sft",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert error_of(urlencoded)["message"].startswith("body: not valid UTF-8")


def test_invalid_utf8_in_openai_form_fields_is_refused(client, quiet, male_prompt):
    sample = {"audio_sample": ("p.wav", male_prompt, "audio/wav"), "name": (None, b"caf\xe9")}
    error = openai_error(_post(client, "/v1/audio/voices", files=sample))
    assert (error["param"], error["message"]) == ("name", "name: not valid UTF-8 text")
    assert client.get("/v1/audio/voices").json()["data"] == []


def test_a_declared_charset_does_not_turn_utf8_into_latin1(client):
    boundary = b"XyZ"
    part = (
        b'--XyZ\r\nContent-Disposition: form-data; name="%s"\r\nContent-Type: text/plain; charset=latin-1\r\n\r\n%s\r\n'
    )
    body = part % (b"tts_text", "你好".encode()) + part % (b"spk_id", "中文女".encode()) + b"--XyZ--\r\n"
    response = client.post(
        "/tts", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"}
    )
    assert response.status_code == 200, response.text


def test_utf8_forms_still_work(client):
    body = b"tts_text=%E4%BD%A0%E5%A5%BD&spk_id=%E4%B8%AD%E6%96%87%E5%A5%B3"
    response = client.post("/tts", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.content
    raw = client.post(
        "/tts",
        content="tts_text=你好&spk_id=中文女".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert raw.status_code == 200 and raw.content


def _lying_wav() -> bytes:
    data = bytearray(wav(np.zeros(1600, np.float32), 16000))
    data[40:44] = (3600 * 16000 * 2).to_bytes(4, "little")  # says an hour; holds 0.1 s
    data[4:8] = (36 + 3600 * 16000 * 2).to_bytes(4, "little")
    return bytes(data)


@pytest.fixture(scope="module")
def flac_bomb() -> bytes:
    """Ten minutes of digital silence at 48 kHz: 55 MB of samples in 6 KB of FLAC (largest frames, no padding)."""
    buf, samples, block = io.BytesIO(), np.zeros(48000 * 600, np.int16), 65535
    with av.open(buf, mode="w", format="flac", options={"metadata_header_padding": "0"}) as container:
        stream = container.add_stream("flac", rate=48000, layout="mono", options={"frame_size": str(block)})
        for start in range(0, samples.size, block):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + block], format="s16", layout="mono")
            frame.sample_rate = 48000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = buf.getvalue()
    assert samples.size * 2 / len(data) > 7000, len(data)
    return data


@pytest.mark.parametrize("kind", ["lying wav", "flac bomb", "not audio", "empty"])
def test_broken_and_bomb_audio(client, quiet, flac_bomb, kind):
    data = {"lying wav": _lying_wav(), "flac bomb": flac_bomb, "not audio": b"RIFF" + b"\0" * 100, "empty": b""}[kind]
    files = {"prompt_audio": ("p.flac", data, "audio/flac")}
    _post(client, "/clone", data={"spk_id": "bomb", "prompt_text": EN_PROMPT}, files=files)
    if kind != "lying wav":  # /upload_audio only checks that a file decodes, which its 0.1 s do
        _post(client, "/upload_audio", files={"file": ("p.flac", data, "audio/flac")})
    _post(client, "/v1/audio/voices", data={"name": "bomb"}, files={"audio_sample": ("p.flac", data, "audio/flac")})
    for method in ("GET", "POST"):
        prompt = {"prompt_wav": ("p.flac", data, "audio/flac")}
        _post(client, "/inference_cross_lingual", method, data={"tts_text": "hi"}, files=prompt)
    b64 = base64.b64encode(data).decode()
    _post(client, "/tts/zero_shot", json={"tts_text": "hi", "prompt_text": EN_PROMPT, "prompt_audio_base64": b64})
    assert client.get("/get_available_spks").json()["cloned"] == []


def test_a_transcript_has_a_length_limit(client, quiet, male_prompt):
    files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
    response = _post(client, "/clone", data={"spk_id": "long", "prompt_text": "word " * 2000}, files=files)
    assert error_of(response)["message"].startswith("prompt_text: 9999 characters; the limit is 1000")
    sample = {"audio_sample": ("p.wav", male_prompt, "audio/wav")}
    _post(client, "/v1/audio/voices", data={"name": "long", "script_hint": "word " * 2000}, files=sample)


@pytest.fixture
def small_client(tmp_path):
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    settings = Settings(data_dir=tmp_path / "d", model_dir=tmp_path / "m", max_upload_mb=0.5)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", [*SEED, *OPENAI, *RUNTIME, *DASHSCOPE, "/upload_audio", "/v1/audio/voices"])
def test_oversized_bodies(small_client, quiet, path):
    b64 = base64.b64encode(b"\0" * 600_000).decode()
    response = _post(small_client, path, json={"tts_text": "hi", "input": "hi", "prompt_audio_base64": b64})
    assert response.status_code == 413


@pytest.fixture
def server_logs():
    """Everything the app and uvicorn log during the test."""
    with recording_logs() as records:
        yield records


def test_clients_that_leave_are_not_server_errors(tmp_path, server_logs):
    with live_server(long_settings(tmp_path)) as (url, app):
        host, port = url.removeprefix("http://").split(":")
        # 1. leaves while sending its body
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            time.sleep(0.3)
        # 2. leaves in the middle of a streamed answer
        body = f'{{"tts_text": "{SENTENCE * 60}", "spk_id": "英文男"}}'.encode()
        with socket.create_connection((host, int(port))) as sock:
            head = "POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        synth = app.state.speech.synthesizer
        deadline = time.monotonic() + 10
        while synth.stats.cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert synth.stats.cancelled == 1
        time.sleep(0.3)
    errors = loud(server_logs)
    assert not errors, errors


def test_slow_headers_and_stalled_bodies_are_cut_off(tmp_path, server_logs):
    """Slowloris: connections that never finish their headers are closed after the header deadline."""
    settings = long_settings(tmp_path, header_timeout_seconds=1.0, body_timeout_seconds=1.0)
    with live_server(settings) as (url, _app):
        host, port = url.removeprefix("http://").split(":")
        slow = [socket.create_connection((host, int(port))) for _ in range(50)]
        for sock in slow:
            sock.sendall(b"POST /tts HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(
            b"POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        for sock in slow:
            sock.settimeout(5)
            assert sock.recv(100) == b"", "a connection with unfinished headers was not closed"
            sock.close()
        assert time.monotonic() - started < 4
        answer = _until_closed(stalled)  # ends only when the server closes the connection
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer, answer
        assert b"connection: close" in answer.lower()
        stalled.close()
        # an answer before the body (an unknown path) closes the connection too: trickling the rest cannot hold it
        trickler = socket.create_connection((host, int(port)))
        trickler.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
        answer = _until_closed(trickler)  # ends only when the server closes the connection
        assert answer.startswith(b"HTTP/1.1 404") and b"connection: close" in answer.lower(), answer
        trickler.close()
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ok"
    errors = loud(server_logs)
    assert not errors, errors


def test_bodies_in_flight_share_a_memory_budget(tmp_path, server_logs):
    """Three large bodies at once over a 2 MB budget: the one that crosses it gets 503 at once, not memory."""
    settings = long_settings(tmp_path, max_upload_mb=1.0, max_buffered_mb=2.0, body_timeout_seconds=5.0)
    with live_server(settings) as (url, app):
        host, port = url.removeprefix("http://").split(":")
        head = b"POST /clone HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += b"Content-Length: 1000000\r\n\r\n"
        senders = []
        for _ in range(3):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(head + b'{"prompt_audio_base64": "' + b"A" * 800_000)  # and the rest never comes
            senders.append(sock)
            time.sleep(0.3)
        answers = []
        for sock in senders:
            sock.settimeout(10)
            answers.append(sock.recv(4096))
            sock.close()
        assert answers[2].startswith(b"HTTP/1.1 503") and b"COSYVOICE_MAX_BUFFERED_MB" in answers[2], answers[2]
        assert b"retry-after: 1\r\n" in answers[2].lower()
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers[:2]), answers[:2]
        # the budget is given back: a large body is read again
        response = httpx.post(f"{url}/upload_audio", files={"file": ("a.wav", b"\0" * 900_000)}, timeout=10)
        assert response.status_code == 422, response.text
        # the OpenAI door answers the same 503 in its own shape (not FastAPI's 400 for a body it could not read)
        sock = socket.create_connection((host, int(port)))
        sock.sendall(head.replace(b"/clone", b"/v1/audio/speech") + b'{"input": "' + b"A" * 800_000)
        hog = socket.create_connection((host, int(port)))
        hog.sendall(head + b'{"x": "' + b"A" * 800_000)
        time.sleep(0.3)
        third = socket.create_connection((host, int(port)))
        third.sendall(head.replace(b"/clone", b"/v1/audio/speech") + b'{"input": "' + b"A" * 800_000)
        answer = _until_closed(third, 10)
        assert answer.startswith(b"HTTP/1.1 503") and b'"server_busy"' not in answer and b'"busy"' in answer, answer
        for held in (sock, hog, third):
            held.close()
    errors = loud(server_logs)
    assert not errors, errors


def _until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_an_unexpected_500_tells_a_keep_alive_client_the_connection_closes(tmp_path, server_logs):
    with live_server(long_settings(tmp_path)) as (url, app):
        host, port = url.removeprefix("http://").split(":")

        def broken(*_args):
            raise RuntimeError("an injected bug")

        app.state.speech.voices.builtin_ids = broken
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"GET /get_available_spks HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _until_closed(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500") and b"connection: close" in head.lower(), head
        assert b'"internal_error"' in body, body
    assert any("an injected bug" in str(r.exc_info[1]) for r in server_logs if r.exc_info)
