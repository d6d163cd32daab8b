"""What the core's service does for every door alike: the MP3 bitrate setting, and one storage lookup for a mapped
voice name."""

import io
import json

import av
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.storage.local import LocalStorage

KEY = "k" * 32


def _bitrate(mp3: bytes) -> int:
    with av.open(io.BytesIO(mp3)) as container:
        return container.streams.audio[0].bit_rate


@pytest.fixture(scope="module")
def at_128(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bitrate")
    settings = Settings(data_dir=folder / "d", model_dir=folder / "m", mp3_bitrate_kbps=128)
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_mp3_bitrate_setting_holds_on_every_door(at_128):
    client = at_128
    answers = {
        "seed": client.post("/tts", json={"tts_text": "Hello there.", "spk_id": "英文女"}).content,
        "openai": client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": "alloy"}),
        "web": client.post("/web/speak", json={"text": "Hello there.", "voice": "英文女", "format": "mp3"}),
    }
    answers = {door: getattr(answer, "content", answer) for door, answer in answers.items()}
    body = {"model": "cosyvoice-v2", "input": {"text": "Hello there.", "voice": "loongstella", "format": "mp3"}}
    result = client.post("/api/v1/services/audio/tts/SpeechSynthesizer", json=body).json()
    answers["dashscope http"] = client.get(result["output"]["audio"]["url"]).content
    header = {"action": "run-task", "task_id": "t", "streaming": "duplex"}
    payload = {"task_group": "audio", "task": "tts", "function": "SpeechSynthesizer", "model": "cosyvoice-v2"}
    payload |= {"parameters": {"voice": "loongstella", "format": "mp3"}, "input": {}}
    audio = bytearray()
    with client.websocket_connect("/api-ws/v1/inference") as ws:
        ws.send_text(json.dumps({"header": header, "payload": payload}))
        for action, text in (("continue-task", {"text": "Hi."}), ("finish-task", {})):
            ws.send_text(json.dumps({"header": {**header, "action": action}, "payload": {"input": text}}))
        while True:
            message = ws.receive()
            if message.get("bytes"):
                audio += message["bytes"]
            elif json.loads(message["text"])["header"]["event"] in ("task-finished", "task-failed"):
                break
    answers["dashscope websocket"] = bytes(audio)
    assert {door: _bitrate(mp3) for door, mp3 in answers.items()} == dict.fromkeys(answers, 128_000)


def test_dashscope_opus_keeps_its_own_bit_rate(at_128):
    body = {"model": "cosyvoice-v2", "input": {"text": "Hello there.", "voice": "loongstella", "format": "opus"}}
    body["input"]["bit_rate"] = 24
    result = at_128.post("/api/v1/services/audio/tts/SpeechSynthesizer", json=body).json()
    opus = at_128.get(result["output"]["audio"]["url"]).content
    with av.open(io.BytesIO(opus)) as container:
        packets = [packet.size for packet in container.demux(audio=0) if packet.size]
    seconds = len(packets) * 0.02
    assert 16_000 < sum(packets) * 8 / seconds < 40_000  # about 24 kbit/s, far from 128


@pytest.fixture
def keyed(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    settings = Settings(data_dir=tmp_path / "d", model_dir=tmp_path / "m", api_keys_file=keys)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def _touched(monkeypatch) -> list[str]:
    """The keys each storage call asks about (the real local storage, watched)."""
    keys: list[str] = []
    for name in ("get", "stat", "exists", "list", "put"):
        real = getattr(LocalStorage, name)

        def watched(self, key, *args, _real=real):
            keys.append(key)
            return _real(self, key, *args)

        monkeypatch.setattr(LocalStorage, name, watched)
    return keys


def test_a_mapped_voice_name_costs_one_storage_lookup(keyed, monkeypatch, male_prompt):
    touched = _touched(monkeypatch)
    speech = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "pcm"}
    mapped = keyed.post("/v1/audio/speech", json=speech)
    assert mapped.status_code == 200 and len(mapped.content) > 4800
    assert touched == ["alice/model/cosyvoice/alloy.pt"]  # the user's own 'alloy' first; 英文女 is a built-in

    sample = {"audio_sample": ("p.wav", male_prompt, "audio/wav")}
    assert keyed.post("/v1/audio/voices", data={"name": "alloy"}, files=sample).status_code == 200
    touched.clear()
    own = keyed.post("/v1/audio/speech", json=speech)
    assert own.status_code == 200 and own.content != mapped.content  # the user's own voice named alloy wins
    assert set(touched) == {"alice/model/cosyvoice/alloy.pt"}


def test_a_name_mapped_to_a_users_voice_is_found_in_their_storage(tmp_path, male_prompt):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    settings = Settings(
        data_dir=tmp_path / "d", model_dir=tmp_path / "m", api_keys_file=keys, openai_voices={"nova": "mine"}
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as client:
        speech = {"model": "tts-1", "input": "Hello there.", "voice": "nova", "response_format": "pcm"}
        missing = client.post("/v1/audio/speech", json=speech).json()["error"]
        assert missing["message"] == "voice: 'nova' stands for 'mine', which this server does not have"
        sample = {"audio_sample": ("p.wav", male_prompt, "audio/wav")}
        assert client.post("/v1/audio/voices", data={"name": "mine"}, files=sample).status_code == 200
        answer = client.post("/v1/audio/speech", json=speech)
        direct = client.post("/v1/audio/speech", json={**speech, "voice": "mine"})
        assert answer.status_code == 200 and len(answer.content) > 4800 and answer.content == direct.content
