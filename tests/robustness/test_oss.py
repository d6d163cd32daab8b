"""OSS storage through the real oss2 client against tests/support/oss_server.py (which checks V4 signatures)."""

import os
import subprocess
import sys
import time

import httpx
import pytest
import torch

from app.config import Settings
from tests.support.audio import decode
from tests.support.doors import clone, error_of
from tests.support.oss_server import OssServer
from tests.support.server import running
from tests.support.speech import EN_PROMPT
from tests.support.voice_files import hostile_voice_files

TEXT = "Good evening, this is my own voice."
AK, SK = "test-ak", "test-sk"


@pytest.fixture
def oss():
    with OssServer(access_key_id=AK, access_key_secret=SK, bucket="learn-wave", region="cn-beijing") as server:
        yield server


def oss_settings(tmp_path, oss, monkeypatch, secret: str = SK, **extra) -> Settings:
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", secret)
    values = {
        "data_dir": tmp_path / "data",
        "model_dir": tmp_path / "no-model",
        "storage": "oss",
        "oss_endpoint": oss.endpoint,
        "oss_bucket": "learn-wave",
        "oss_region": "cn-beijing",
        "storage_timeout_seconds": 1.0,
        "storage_retries": 1,
    }
    return Settings(**(values | extra))


def gets(oss, key: str) -> int:
    return sum(1 for method, path, _ in oss.requests if method == "GET" and path == key)


def test_clone_for_a_user_is_stored_in_oss(tmp_path, oss, monkeypatch, female_prompt):
    with running(oss_settings(tmp_path, oss, monkeypatch)) as client:
        assert clone(client, "mine", female_prompt, user_id="alice").status_code == 200
        assert client.get("/get_available_spks", params={"user_id": "alice"}).json()["cloned"] == ["mine"]
        assert client.get("/get_available_spks", params={"user_id": "bob"}).json()["cloned"] == []
        spoken = client.post("/tts", json={"tts_text": TEXT, "spk_id": "mine", "user_id": "alice"})
        assert decode(spoken.content).median_f0() > 170
    objects = oss.objects
    assert "alice/model/cosyvoice/mine.pt" in objects
    assert "alice/model/cosyvoice/sources/mine.wav" in objects
    import io

    assert torch.load(io.BytesIO(objects["alice/model/cosyvoice/mine.pt"]), weights_only=True)["variant"] == "female"


def test_storage_fields_of_generate_audio_and_the_cache(tmp_path, oss, monkeypatch, female_prompt):
    oss.put("carol/prompts/ref.wav", female_prompt)
    with running(oss_settings(tmp_path, oss, monkeypatch)) as client:
        body = {"mode": "3s极速复刻", "tts_text": TEXT, "prompt_text": EN_PROMPT, "user_id": "carol"}
        body |= {"prompt_speech_16k": "prompts/ref.wav", "exp_name": "exp1", "stream": "False"}
        assert decode(client.post("/generate_audio", json=body).content).median_f0() > 170
        assert "carol/model/cosyvoice/exp1.pt" in oss.objects
        assert gets(oss, "carol/prompts/ref.wav") == 1
        client.post("/generate_audio", json=body)
        assert gets(oss, "carol/prompts/ref.wav") == 1  # cached by key and ETag: no second download
        custom = {
            "mode": "预训练音色",
            "tts_text": TEXT,
            "spk_id": "英文男",
            "spk_customize": "exp1",
            "user_id": "carol",
        }
        for _ in range(3):
            assert decode(client.post("/generate_audio", json=custom).content).median_f0() > 170
        assert gets(oss, "carol/model/cosyvoice/exp1.pt") == 1
        oss.put("carol/prompts/ref.wav", female_prompt + b"\0\0")  # changed: new ETag, fetched again
        client.post("/generate_audio", json=body)
        assert gets(oss, "carol/prompts/ref.wav") == 2


def test_two_service_processes_share_one_bucket(tmp_path, oss, female_prompt):
    env = os.environ | {
        "OSS_ACCESS_KEY_ID": AK,
        "OSS_ACCESS_KEY_SECRET": SK,
        "COSYVOICE_STORAGE": "oss",
        "COSYVOICE_OSS_ENDPOINT": oss.endpoint,
        "COSYVOICE_MODEL_DIR": str(tmp_path / "no-model"),
    }
    servers, urls = [], []
    try:
        for i, port in enumerate(free_ports(2)):
            process_env = env | {"COSYVOICE_DATA_DIR": str(tmp_path / f"replica{i}")}
            command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
            servers.append(subprocess.Popen(command, env=process_env, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_until_up(url)
        files = {"prompt_audio": ("p.wav", female_prompt, "audio/wav")}
        data = {"spk_id": "shared", "prompt_text": EN_PROMPT, "user_id": "dora"}
        assert httpx.post(f"{urls[0]}/clone", data=data, files=files, timeout=60).status_code == 200
        listed = httpx.get(f"{urls[1]}/get_available_spks", params={"user_id": "dora"}).json()
        assert listed["cloned"] == ["shared"]
        body = {"tts_text": TEXT, "spk_id": "shared", "user_id": "dora"}
        assert decode(httpx.post(f"{urls[1]}/tts", json=body, timeout=60).content).median_f0() > 170
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


def free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_until_up(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not start")


@pytest.mark.parametrize("kind", ["code", "truncated", "wrong_model"])
def test_hostile_voice_files_in_oss(tmp_path, oss, monkeypatch, kind):
    oss.put("mallory/model/cosyvoice/evil.pt", hostile_voice_files(tmp_path)[kind])
    with running(oss_settings(tmp_path, oss, monkeypatch)) as client:
        body = {
            "mode": "预训练音色",
            "tts_text": TEXT,
            "spk_id": "中文女",
            "spk_customize": "evil",
            "user_id": "mallory",
        }
        response = client.post("/generate_audio", json=body)
        assert response.status_code == 422 and error_of(response)["message"].startswith("spk_customize:")
    assert not (tmp_path / "pwned").exists()


def test_storage_errors_are_clear_and_lose_nothing(tmp_path, oss, monkeypatch, female_prompt, male_prompt):
    with running(oss_settings(tmp_path, oss, monkeypatch)) as client:
        assert clone(client, "kept", female_prompt, user_id="erin").status_code == 200
        before = dict(oss.objects)

        oss.fail_next(10, status=500)  # more than the retries: a clear 503
        response = clone(client, "kept", male_prompt, user_id="erin", overwrite="true")
        assert response.status_code == 503
        assert error_of(response)["code"] == "storage_unavailable" and "learn-wave" in error_of(response)["message"]
        oss.fail_next(0)
        assert oss.objects["erin/model/cosyvoice/kept.pt"] == before["erin/model/cosyvoice/kept.pt"]

        oss.fail_next(1, status=503)  # one failure: retried, and it works
        listed = client.get("/get_available_spks", params={"user_id": "erin"})
        assert listed.json()["cloned"] == ["kept"]

        oss.stall_next(10, seconds=3.0)  # slower than the 1 s timeout, every retry: 503, not a hang
        started = time.monotonic()
        response = client.get("/get_available_spks", params={"user_id": "erin"})
        assert response.status_code == 503 and time.monotonic() - started < 10
        oss.stall_next(0)

        oss.fail_next(10, status=500)  # readiness says the storage does not answer, and the metrics count it
        not_ready = client.get("/ready")
        assert not_ready.status_code == 503 and "learn-wave" in not_ready.json()["checks"]["storage"]
        assert 'cosyvoice_storage_errors_total{kind="StorageUnavailable"}' in client.get("/metrics").text
        oss.fail_next(0)
        assert client.get("/ready").json()["checks"]["storage"] == "ok"

        assert client.get("/health").json()["status"] == "ok"
        spoken = client.post("/tts", json={"tts_text": TEXT, "spk_id": "kept", "user_id": "erin"})
        assert decode(spoken.content).median_f0() > 170  # still the old voice, and the service is up


def test_a_wrong_secret_is_refused_with_a_clear_error(tmp_path, oss, monkeypatch, female_prompt):
    with running(oss_settings(tmp_path, oss, monkeypatch, secret="wrong")) as client:
        response = clone(client, "x", female_prompt, user_id="frank")
        assert response.status_code == 502
        assert error_of(response)["code"] == "storage_error" and "403" in error_of(response)["message"]
        assert "wrong" not in response.text and SK not in response.text
    assert oss.objects == {}


def test_the_key_prefix_setting(tmp_path, oss, monkeypatch, male_prompt):
    with running(oss_settings(tmp_path, oss, monkeypatch, oss_prefix="voice-service/")) as client:
        assert clone(client, "v", male_prompt, user_id="gina").status_code == 200
        assert client.get("/get_available_spks", params={"user_id": "gina"}).json()["cloned"] == ["v"]
    assert "voice-service/gina/model/cosyvoice/v.pt" in oss.objects
    assert not [key for key in oss.objects if key.startswith("gina/")]
