"""DashScope's HTTP synthesizer and voice enrollment, driven by the official `dashscope` SDK
(HttpSpeechSynthesizer, tts_v2.VoiceEnrollmentService), and the server-side request forgery rules of ``url``."""

import base64
import gzip
import http.server
import logging
import threading
import time

import dashscope
import pytest
import requests
from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer, VoiceEnrollmentException, VoiceEnrollmentService

from tests.support.audio import decode, decode_pcm
from tests.support.server import last_engine_seconds, last_record, live_server, long_settings
from tests.support.speech import EN_PROMPT

dashscope.api_key = "not-checked"


@pytest.fixture
def served(tmp_path, monkeypatch):
    with live_server(long_settings(tmp_path)) as (url, app):
        monkeypatch.setattr(dashscope, "base_http_api_url", f"{url}/api/v1")
        yield url, app


@pytest.mark.parametrize("audio_format", ["wav", "pcm", "mp3"])
def test_one_answer_with_a_url_to_the_audio(served, audio_format):
    url, app = served
    result = dashscope.HttpSpeechSynthesizer.call(
        model="cosyvoice-v3-flash",
        text="Hello there.",
        voice="longanyang",
        audio_format=audio_format,
        sample_rate=16000,
        volume=50,
        rate=1.0,
    )
    assert result.status_code == 200 and result.audio_url.startswith(url) and result.expires_at > 0
    audio = requests.get(result.audio_url, timeout=30).content
    got = decode_pcm(audio, 16000) if audio_format == "pcm" else decode(audio)
    expected = last_engine_seconds(app) * 16000
    assert got.rate == 16000 and abs(got.samples.size - expected) <= (1152 if audio_format == "mp3" else 2)


def test_events_carry_each_sentences_audio_as_it_is_made(served):
    url, app = served
    parts = list(
        dashscope.HttpSpeechSynthesizer.call(
            model="cosyvoice-v3-flash",
            text="The first sentence. The second one.",
            voice="longanyang",
            audio_format="mp3",
            sample_rate=24000,
            stream=True,
        )
    )
    final = parts[-1]
    assert final.audio_url and len(parts) > 2
    assert {p.sentences[-1]["index"] for p in parts[:-1]} == {0, 1}
    joined = b"".join(p.audio_data for p in parts[:-1])
    assert final.audio_data == joined and requests.get(final.audio_url, timeout=30).content == joined
    last_record(app)  # every stream recorded
    assert abs(decode(joined).seconds - app.state.speech.synthesizer.stats.audio_seconds) < 0.1


def test_http_errors_in_dashscopes_shape(served):
    url, _app = served
    result = dashscope.HttpSpeechSynthesizer.call(model="m", text="Hi.", voice="nobody_v9")
    assert (result.status_code, result.code) == (404, "InvalidParameter")
    assert result.message.startswith("voice: no voice named 'nobody_v9'") and result.request_id
    bad = requests.post(f"{url}/api/v1/services/audio/tts/SpeechSynthesizer", json={"model": "m", "input": {}})
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParameter"
    assert bad.json()["message"].startswith("input.voice: ")


def _refusal(exc: VoiceEnrollmentException) -> tuple[int, str, str]:
    """(status, code, message): the exception keeps them private; its str() shows them."""
    return exc._status_code, exc._code, exc._error_message


def _data_url(wav_bytes: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes).decode()


def test_enroll_list_query_use_update_and_delete_a_voice(served, male_prompt, female_prompt):
    url, _app = served
    service = VoiceEnrollmentService()
    voice_id = service.create_voice(
        target_model="cosyvoice-v2", prefix="myvoice", url=_data_url(male_prompt), prompt_text=EN_PROMPT
    )
    assert voice_id.startswith("cosyvoice-v2-myvoice-")
    listed = service.list_voices(prefix="myvoice")
    assert [v["voice_id"] for v in listed] == [voice_id] and listed[0]["status"] == "OK"
    assert service.list_voices(prefix="other") == []
    queried = service.query_voice(voice_id)
    assert queried["status"] == "OK" and queried["target_model"] == "cosyvoice-v2" and queried["gmt_create"]
    # the voice speaks on every door: DashScope's WebSocket, the seed's /tts
    ws_url = url.replace("http://", "ws://") + "/api-ws/v1/inference"
    low = SpeechSynthesizer(
        model="cosyvoice-v2", voice=voice_id, url=ws_url, format=AudioFormat.WAV_24000HZ_MONO_16BIT
    ).call("Hello there, how are you?")
    seed = requests.post(f"{url}/tts", json={"tts_text": "Hello there.", "spk_id": voice_id}, timeout=30)
    assert seed.status_code == 200 and decode(seed.content).seconds > 0.3
    service.update_voice(voice_id, _data_url(female_prompt))
    high = SpeechSynthesizer(
        model="cosyvoice-v2", voice=voice_id, url=ws_url, format=AudioFormat.WAV_24000HZ_MONO_16BIT
    ).call("Hello there, how are you?")
    assert decode(high).median_f0() > 1.3 * decode(low).median_f0()  # now the female sample's voice
    with pytest.raises(VoiceEnrollmentException) as bad_prefix:
        service.create_voice(target_model="cosyvoice-v2", prefix="My-Voice", url=_data_url(male_prompt))
    assert _refusal(bad_prefix.value)[0] == 400 and _refusal(bad_prefix.value)[2].startswith("input.prefix: ")
    service.delete_voice(voice_id)
    assert service.list_voices() == []
    with pytest.raises(VoiceEnrollmentException) as missing:
        service.query_voice(voice_id)
    status, code, message = _refusal(missing.value)
    assert (status, code) == (404, "InvalidParameter") and message.startswith("input.voice_id: no voice named")


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("file:///etc/passwd", 400, "input.url: file URL is not fetched"),
        ("ftp://example.com/a.wav", 400, "input.url: ftp URL is not fetched"),
        ("http://example.com/a.wav", 403, "input.url: example.com is not a host this server fetches from"),
        ("http://127.0.0.1/a.wav", 403, "input.url: 127.0.0.1 is not a host"),
        ("data:audio/wav;base64,%%%", 400, "input.url: not valid base64"),
    ],
)
def test_urls_this_server_will_not_fetch(served, caplog, url, status, message):
    with caplog.at_level(logging.INFO), pytest.raises(VoiceEnrollmentException) as refused:
        VoiceEnrollmentService().create_voice(target_model="cosyvoice-v2", prefix="x", url=url)
    assert _refusal(refused.value)[0] == status and _refusal(refused.value)[2].startswith(message)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_key_in_the_callers_storage(served, male_prompt):
    _url, app = served
    prompts = app.state.settings.data_dir / "storage" / "carol" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "ref.wav").write_bytes(male_prompt)
    service = VoiceEnrollmentService()
    voice_id = service.create_voice(
        target_model="cosyvoice-v2", prefix="stored", url="prompts/ref.wav", user_id="carol"
    )
    assert service.query_voice(voice_id)["status"] == "OK"
    for fields, message in [
        ({}, "input.url: a storage key needs input.user_id"),
        ({"user_id": "dave"}, "input.url: user 'dave' has no object 'prompts/ref.wav'"),
        ({"user_id": "carol", "url": "../carol/prompts/ref.wav"}, "input.url: "),
        ({"user_id": "../x"}, "input.user_id: "),
    ]:
        with pytest.raises(VoiceEnrollmentException) as refused:
            service.create_voice(**{"target_model": "m", "prefix": "x", "url": "prompts/ref.wav", **fields})
        assert _refusal(refused.value)[2].startswith(message), (fields, _refusal(refused.value))


class _Files(http.server.BaseHTTPRequestHandler):
    """A file server on loopback: /voice.wav, a redirect to the same host, one to another, and a huge file."""

    body = b""

    def do_GET(self):  # noqa: N802
        if self.path == "/same":
            self.send_response(302)
            self.send_header("Location", "/voice.wav")
        elif self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("Location", "http://localhost:1/voice.wav")
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(64 * 1024 * 1024))
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 1024 * 1024)
            except OSError:
                pass
            return
        elif self.path == "/gzipped":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip, gzip")
            self.end_headers()
            self.wfile.write(gzip.compress(gzip.compress(b"\0" * 50_000_000)))
            return
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(20):  # each byte in time for a per-read timeout; the whole never
                    self.wfile.write(b"R")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
            return
        elif self.path == "/voice.wav":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
            return
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(male_prompt):
    _Files.body = male_prompt
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def fetching(tmp_path, monkeypatch):
    settings = long_settings(
        tmp_path, fetch_hosts=["127.0.0.1"], fetch_private=True, max_upload_mb=2, fetch_timeout_seconds=2
    )
    with live_server(settings) as (url, app):
        monkeypatch.setattr(dashscope, "base_http_api_url", f"{url}/api/v1")
        yield url, app


def test_allowed_hosts_are_fetched_within_limits(fetching, file_server):
    service = VoiceEnrollmentService()
    voice_id = service.create_voice(target_model="cosyvoice-v2", prefix="fetched", url=f"{file_server}/same")
    assert service.query_voice(voice_id)["status"] == "OK"
    for path, status, message in [
        ("/elsewhere", 403, "input.url: 127.0.0.1 redirects to another host (localhost); not followed"),
        ("/huge", 413, "input.url: the URL's file is over"),
        ("/missing.wav", 400, "input.url: 127.0.0.1 answered 404"),
        ("/gzipped", 400, "input.url: 127.0.0.1 sent the file gzip, gzip-encoded; only unencoded files are fetched"),
        ("/trickle", 400, "input.url: the URL's file did not arrive within 2 s"),
    ]:
        with pytest.raises(VoiceEnrollmentException) as refused:
            service.create_voice(target_model="cosyvoice-v2", prefix="x", url=file_server + path)
        assert _refusal(refused.value)[0] == status and _refusal(refused.value)[2].startswith(message), path


@pytest.mark.parametrize("private", [False, True])
def test_private_and_link_local_addresses_are_refused_even_when_allowed(tmp_path, monkeypatch, private):
    metadata = ["169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::"]
    refused_hosts = [(host, "a link-local or reserved") for host in metadata]  # cloud metadata in any disguise
    if not private:
        refused_hosts += [("127.0.0.1", "a loopback"), ("10.0.0.1", "a private")]
    hosts = [host for host, _ in refused_hosts]
    settings = long_settings(tmp_path, fetch_hosts=hosts, fetch_private=private)
    with live_server(settings) as (url, _app):
        monkeypatch.setattr(dashscope, "base_http_api_url", f"{url}/api/v1")
        for host, kind in refused_hosts:
            literal = f"[{host}]" if ":" in host else host
            with pytest.raises(VoiceEnrollmentException) as refused:
                VoiceEnrollmentService().create_voice(target_model="m", prefix="x", url=f"http://{literal}/a.wav")
            status, _, message = _refusal(refused.value)
            assert status == 403 and message.startswith(f"input.url: {host} resolves to "), message
            assert f", {kind} address" in message, message


@pytest.mark.parametrize("url", ["http://[abc/a.wav", "http://example.com:99999/a.wav", "http://example.com:x/"])
def test_malformed_urls_are_a_400(served, url):
    with pytest.raises(VoiceEnrollmentException) as refused:
        VoiceEnrollmentService().create_voice(target_model="m", prefix="x", url=url)
    status, code, message = _refusal(refused.value)
    assert (status, code) == (400, "InvalidParameter") and message.startswith("input.url: not a valid URL"), message


def test_streamed_synthesis_keeps_the_text_limit(served):
    url, _app = served
    body = {"model": "m", "input": {"text": "word " * 25_000, "voice": "longanyang"}}  # the fixture's limit: 100,000
    response = requests.post(
        f"{url}/api/v1/services/audio/tts/SpeechSynthesizer", json=body, headers={"X-DashScope-SSE": "enable"}
    )
    assert response.status_code == 400 and response.json()["message"].startswith("text: 124999 characters")
