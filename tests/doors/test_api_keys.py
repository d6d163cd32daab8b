"""API keys (COSYVOICE_API_KEYS_FILE) and tenants, with each door's own client: a keyed request sees and uses only
its user's voices plus the built-ins, whatever user it names; a missing or wrong key is a 401 in the door's shape."""

import base64
import logging
import secrets
import time

import dashscope
import grpc
import httpx
import openai
import pytest
import requests
from dashscope.audio.tts_v2 import SpeechSynthesizer, VoiceEnrollmentService

from app.api.keys import KeyFileError
from app.config import Settings
from app.main import create_app
from tests.support.audio import decode, decode_pcm
from tests.support.logs import logged
from tests.support.ports import free_port
from tests.support.server import live_server
from tests.support.speech import EN_PROMPT
from tests.support.upstream_grpc import OUR_PROTO, call, generate_stubs

ALICE, BOB = "sk-alice-" + secrets.token_hex(12), "sk-bob-" + secrets.token_hex(12)


def _key_file(tmp_path, text: str):
    path = tmp_path / "keys.txt"
    path.write_text(text)
    return path


def _settings(tmp_path, **overrides) -> Settings:
    keys = _key_file(tmp_path, f"# who may speak\n\n{ALICE} alice\n  {BOB}   bob  \n")
    return Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", api_keys_file=keys, **overrides)


@pytest.fixture
def served(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with live_server(_settings(tmp_path, grpc_port=free_port())) as (url, app):
        yield url, app
    for key in (ALICE, BOB, "sk-wrong-" + "0" * 16):
        assert all(key not in r.getMessage() for r in logged(caplog)), "an API key reached the log"
    server_errors = [r for r in logged(caplog) if r.name.startswith(("uvicorn", "app")) and r.levelno >= logging.ERROR]
    assert not server_errors, server_errors  # a refused client is no error of the server's


def _as(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _clone(url: str, key: str, name: str, prompt: bytes, **fields) -> httpx.Response:
    data = {"spk_id": name, "prompt_text": EN_PROMPT, **fields}
    return httpx.post(
        f"{url}/clone", data=data, files={"prompt_audio": ("p.wav", prompt)}, headers={"X-API-Key": key}, timeout=60
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{ALICE}\n", "line 1: expected 'KEY USER_ID'"),
        (f"# ok\n{ALICE} alice extra\n", "line 2: expected"),
        ("short alice\n", "line 1: the key is shorter than 16"),
        (f"{ALICE} ../etc\n", "line 1: the user id"),
        (f"{ALICE} alice\n{ALICE} bob\n", "line 2: the same key is listed twice"),
        ("# nothing here\n", "no keys"),
    ],
)
def test_a_bad_key_file_stops_the_start_and_names_the_line_not_the_key(tmp_path, text, problem):
    with pytest.raises(KeyFileError) as raised:
        create_app(Settings(data_dir=tmp_path / "d", model_dir=tmp_path / "m", api_keys_file=_key_file(tmp_path, text)))
    assert problem in str(raised.value) and ALICE not in str(raised.value)


def test_without_a_valid_key_every_door_answers_401_in_its_own_shape(served, tmp_path):
    url, _app = served
    seed = httpx.post(f"{url}/tts", json={"tts_text": "Hello.", "spk_id": "英文男"})
    assert seed.status_code == 401 and seed.headers["www-authenticate"] == "Bearer"
    assert seed.json()["error"]["code"] == "unauthorized" and "X-API-Key" in seed.json()["error"]["message"]
    wrong = httpx.post(
        f"{url}/tts", json={"tts_text": "Hello.", "spk_id": "英文男"}, headers=_as("sk-wrong-" + "0" * 16)
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "the API key is not valid"

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong-" + "0" * 16, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    assert refused.value.code == "invalid_api_key"

    runtime = requests.get(f"{url}/inference_sft", data={"tts_text": "Hello.", "spk_id": "英文男"})
    assert runtime.status_code == 401 and runtime.json()["detail"].startswith("an API key is required")
    ds = httpx.post(f"{url}/api/v1/services/audio/tts/SpeechSynthesizer", json={"model": "m", "input": {"text": "x"}})
    assert ds.status_code == 401 and ds.json()["code"] == "InvalidApiKey"

    stubs = generate_stubs(OUR_PROTO, tmp_path)
    port = _app.state.settings.grpc_port
    sft = {"kind": "sft_request", "fields": {"spk_id": "英文男", "tts_text": "Hello."}}
    denied, allowed = call(stubs, port, [sft, {**sft, "metadata": [["authorization", f"Bearer {ALICE}"]]}])
    assert denied["code"] == grpc.StatusCode.UNAUTHENTICATED.name and "API key" in denied["details"]
    assert decode_pcm(allowed["audio"], 24000).seconds > 0.2

    # probes, metrics and the page need no key
    for path in ("/health", "/ready", "/metrics", "/"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    assert 'cosyvoice_rejected_total{reason="unauthenticated"} 6.0' in httpx.get(f"{url}/metrics").text


def test_each_user_sees_and_uses_only_their_own_voices_and_the_builtins(served, male_prompt):
    url, _app = served
    cloned = _clone(url, ALICE, "mine", male_prompt)
    assert cloned.status_code == 200, cloned.text
    alice = httpx.get(f"{url}/get_available_spks", headers=_as(ALICE)).json()
    bob = httpx.get(f"{url}/get_available_spks", headers=_as(BOB)).json()
    assert alice["cloned"] == ["mine"] and bob["cloned"] == [] and alice["builtin"] == bob["builtin"]
    # the seed's user_id is the key's user, or a 403
    spoken = httpx.post(
        f"{url}/tts", json={"tts_text": "Hello.", "spk_id": "mine", "user_id": "alice"}, headers=_as(ALICE)
    )
    assert spoken.status_code == 200 and decode(spoken.content).seconds > 0.2
    other = httpx.post(
        f"{url}/tts", json={"tts_text": "Hello.", "spk_id": "mine", "user_id": "alice"}, headers=_as(BOB)
    )
    assert other.status_code == 403 and other.json()["error"]["message"].startswith("user_id: 'alice' is not the user")
    missing = httpx.post(f"{url}/tts", json={"tts_text": "Hello.", "spk_id": "mine"}, headers=_as(BOB))
    assert missing.status_code == 404
    assert httpx.get(f"{url}/get_available_spks?user_id=alice", headers=_as(BOB)).status_code == 403
    assert httpx.delete(f"{url}/voices/mine", headers=_as(BOB)).status_code == 404  # Bob cannot delete it

    # the OpenAI SDK: Alice's voice for Alice only; built-ins for both
    for key, works in ((ALICE, True), (BOB, False)):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        if works:
            audio = client.audio.speech.create(model="tts-1", voice="mine", input="Hello.", response_format="wav")
            assert decode(audio.content).seconds > 0.2
        else:
            with pytest.raises(openai.NotFoundError):
                client.audio.speech.create(model="tts-1", voice="mine", input="Hello.")
        builtin = client.audio.speech.create(model="tts-1", voice="英文女", input="Hi.", response_format="wav")
        assert decode(builtin.content).seconds > 0.1
    listed = httpx.get(f"{url}/v1/audio/voices", headers=_as(BOB)).json()
    assert listed["data"] == []


def test_a_voice_cloned_without_keys_is_no_tenants_voice(tmp_path, male_prompt):
    """The shared library of a server that ran without keys stays on disk, but no key's user sees or uses it."""
    plain = Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model")
    with live_server(plain) as (url, _app):
        assert _clone(url, "", "shared", male_prompt).status_code == 200
    with live_server(_settings(tmp_path)) as (url, _app):
        assert httpx.get(f"{url}/get_available_spks", headers=_as(ALICE)).json()["cloned"] == []
        used = httpx.post(f"{url}/tts", json={"tts_text": "Hello.", "spk_id": "shared"}, headers=_as(ALICE))
        assert used.status_code == 404
    with live_server(plain) as (url, _app):  # and it is still there when keys are off again
        assert httpx.get(f"{url}/get_available_spks").json()["cloned"] == ["shared"]


def test_dashscope_enrollment_and_synthesis_are_the_key_users(served, male_prompt, monkeypatch, caplog):
    url, _app = served
    monkeypatch.setattr(dashscope, "base_http_api_url", f"{url}/api/v1")
    ws_url = url.replace("http://", "ws://") + "/api-ws/v1/inference"
    sample = "data:audio/wav;base64," + base64.b64encode(male_prompt).decode()
    voice_id = VoiceEnrollmentService(api_key=ALICE).create_voice(
        target_model="cosyvoice-v2", prefix="alice", url=sample, prompt_text=EN_PROMPT
    )
    assert httpx.get(f"{url}/get_available_spks", headers=_as(ALICE)).json()["cloned"] == [voice_id]
    # the HTTP synthesizer's audio URL is fetched as DashScope's presigned ones are: without a key
    result = dashscope.HttpSpeechSynthesizer.call(model="cosyvoice-v2", text="Hi there.", voice=voice_id, api_key=ALICE)
    assert result.status_code == 200 and decode(httpx.get(result.output["audio"]["url"]).content).seconds > 0.2
    assert VoiceEnrollmentService(api_key=BOB).list_voices(prefix="alice") == []
    monkeypatch.setattr(dashscope, "api_key", ALICE)
    audio = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, url=ws_url).call("Hello there.")
    assert audio and decode(audio).seconds > 0.2
    monkeypatch.setattr(dashscope, "api_key", BOB)
    refused = SpeechSynthesizer(model="cosyvoice-v2", voice=voice_id, url=ws_url)
    with pytest.raises(Exception, match="InvalidParameter|not"):
        refused.call("Hello there.")
    monkeypatch.setattr(dashscope, "api_key", "sk-wrong-" + "0" * 16)
    with pytest.raises(Exception, match="could not establish"):  # the SDK's words for any refused handshake
        SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun", url=ws_url).call("Hello there.")
    # what it logs of the answer: a 401 in DashScope's shape
    assert "Handshake status 401" in caplog.text and '"code":"InvalidApiKey"' in caplog.text


def test_keys_are_read_again_when_the_file_changes(tmp_path):
    settings = _settings(tmp_path)
    with live_server(settings) as (url, _app):
        carol = "sk-carol-" + secrets.token_hex(12)
        assert httpx.get(f"{url}/get_available_spks", headers=_as(carol)).status_code == 401
        settings.api_keys_file.write_text(f"{ALICE} alice\n{carol} carol\n")  # Bob revoked, Carol added
        time.sleep(1.1)
        assert httpx.get(f"{url}/get_available_spks", headers=_as(carol)).status_code == 200
        assert httpx.get(f"{url}/get_available_spks", headers=_as(BOB)).status_code == 401
        settings.api_keys_file.write_text("broken line\n")  # a broken file keeps the keys in use
        time.sleep(1.1)
        assert httpx.get(f"{url}/get_available_spks", headers=_as(carol)).status_code == 200
