"""Upstream CosyVoice's gRPC API (cosyvoice.CosyVoice/Inference) with a grpcio client built from the proto."""

import time

import pytest
import requests

from tests.support.ports import free_port
from tests.support.server import live_server, long_settings
from tests.support.speech import EN_PROMPT, SENTENCE
from tests.support.upstream_grpc import OUR_PROTO, call, generate_stubs, raw_prompt, upstream_proto


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return generate_stubs(upstream_proto() or OUR_PROTO, tmp_path_factory.mktemp("stubs"))


@pytest.fixture
def served(tmp_path):
    port = free_port()
    with live_server(long_settings(tmp_path, grpc_port=port)) as (url, app):
        yield url, port, app


def test_every_kind_of_request_speaks_as_the_http_api_does(served, stubs, male_prompt, tmp_path):
    url, port, _app = served
    prompt = raw_prompt(male_prompt, tmp_path)
    calls = [
        {"kind": "sft_request", "fields": {"spk_id": "英文男", "tts_text": "Hello there."}},
        {"kind": "zero_shot_request", "fields": {"tts_text": "Hello there.", "prompt_text": EN_PROMPT}},
        {"kind": "cross_lingual_request", "fields": {"tts_text": "Hello there."}},
        {"kind": "instruct_request", "fields": {"tts_text": "Hello.", "spk_id": "英文女", "instruct_text": "Slowly."}},
    ]
    for prompted in calls[1:3]:
        prompted["prompt_file"] = str(prompt)
    results = call(stubs, port, calls)
    # the same requests through upstream's HTTP API, the prompt as the WAV of the same 16 kHz samples
    from app.core.voice_store import Upload

    prompt_wav = Upload.from_pcm16(prompt.read_bytes(), 16000).data
    http = [
        ("sft", {"spk_id": "英文男", "tts_text": "Hello there."}, None),
        ("zero_shot", {"tts_text": "Hello there.", "prompt_text": EN_PROMPT}, prompt_wav),
        ("cross_lingual", {"tts_text": "Hello there."}, prompt_wav),
        ("instruct", {"tts_text": "Hello.", "spk_id": "英文女", "instruct_text": "Slowly."}, None),
    ]
    for result, (kind, fields, wav_file) in zip(results, http, strict=True):
        files = {"prompt_wav": ("p.wav", wav_file)} if wav_file else None
        expected = requests.get(f"{url}/inference_{kind}", data=fields, files=files, timeout=60).content
        assert "audio" in result, (kind, result)
        assert len(result["audio"]) > 16000 and result["audio"] == expected, kind


@pytest.mark.parametrize(
    ("kind", "fields", "prompt", "code", "details"),
    [
        ("", {}, None, "INVALID_ARGUMENT", "the request sets none of sft_request"),
        ("sft_request", {"spk_id": "nobody", "tts_text": "Hi."}, None, "NOT_FOUND", "spk_id: no voice named"),
        ("sft_request", {"spk_id": "英文男", "tts_text": " "}, None, "INVALID_ARGUMENT", "tts_text: must not be"),
        ("zero_shot_request", {"tts_text": "Hi."}, None, "INVALID_ARGUMENT", "prompt_audio: "),
        ("cross_lingual_request", {"tts_text": "Hi."}, b"odd", "INVALID_ARGUMENT", "prompt_audio: 3 bytes is not"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(served, stubs, tmp_path, kind, fields, prompt, code, details):
    _url, port, _app = served
    request = {"kind": kind, "fields": fields}
    if prompt is not None:
        (tmp_path / "prompt.pcm").write_bytes(prompt)
        request["prompt_file"] = str(tmp_path / "prompt.pcm")
    (result,) = call(stubs, port, [request])
    assert result.get("code") == code and result["details"].startswith(details), result


def test_a_client_that_cancels_stops_synthesis(served, stubs):
    _url, port, app = served
    synth = app.state.speech.synthesizer
    long_call = {"kind": "sft_request", "fields": {"spk_id": "英文男", "tts_text": SENTENCE * 300}, "cancel_after": 1}
    (result,) = call(stubs, port, [long_call])
    assert result["chunks"] == 1
    deadline = time.monotonic() + 10
    while synth.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert synth.active == 0 and synth.stats.cancelled == 1 and synth.stats.completed == 0


def test_a_bug_is_internal_with_a_fixed_message(served, stubs):
    _url, port, app = served

    def broken(_request):
        raise RuntimeError("injected bug")
        yield  # a generator, like the engines'

    app.state.speech.engine.synthesize = broken
    (result,) = call(stubs, port, [{"kind": "sft_request", "fields": {"spk_id": "英文男", "tts_text": "Hi."}}])
    assert result == {"code": "INTERNAL", "details": "synthesis failed; the server log has the details"}


@pytest.mark.parametrize(
    ("message", "details"),
    [
        (b"\xff\xff\xff\xff\xff", "not a cosyvoice.Request (DecodeError)"),
        (b"\x0a\x05\x0a\x03\xff\xfe\xfd", "not a cosyvoice.Request"),  # a string field that is not UTF-8
        (b"\x0a" + b"\x80" * 12, "not a cosyvoice.Request"),  # a length that never ends
    ],
)
def test_bytes_that_are_not_a_request_are_invalid_argument_without_a_traceback(served, message, details):
    import grpc

    from tests.support.logs import loud, recording_logs

    _url, port, _app = served
    with recording_logs() as logs, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        inference = channel.unary_stream("/cosyvoice.CosyVoice/Inference")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as refused:
            list(inference(message, timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(details)
    assert not loud(logs), loud(logs)


def test_a_message_over_the_upload_limit_is_invalid_argument(tmp_path):
    import grpc

    port = free_port()
    with (
        live_server(long_settings(tmp_path, grpc_port=port, max_upload_mb=1.0)),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        inference = channel.unary_stream("/cosyvoice.CosyVoice/Inference")
        with pytest.raises(grpc.RpcError) as refused:
            list(inference(b"\x00" * (1024 * 1024 + 10), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "the message is 1048586 bytes; at most 1048576 (COSYVOICE_MAX_UPLOAD_MB)"


def test_a_connection_that_says_nothing_is_closed(tmp_path, monkeypatch):
    """As the HTTP port closes a client that sends no headers: a TCP connection that never completes gRPC's
    handshake is closed after HANDSHAKE_SECONDS (here 1 s)."""
    import socket

    from app.api.runtime import grpc_server

    monkeypatch.setattr(grpc_server, "HANDSHAKE_SECONDS", 1.0)
    port = free_port()
    with live_server(long_settings(tmp_path, grpc_port=port)):
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        try:
            while silent.recv(4096):  # whatever the server sends first, then the close
                pass
        except ConnectionResetError:
            pass
        finally:
            silent.close()
    assert 0.5 < time.monotonic() - started < 8
