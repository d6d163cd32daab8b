"""Per-user voices and prompts in storage (the local folder here; OSS in test_oss.py)."""

import pytest
import torch

from tests.support.audio import decode
from tests.support.doors import clone, error_of
from tests.support.speech import EN_PROMPT
from tests.support.voice_files import hostile_voice_files

TEXT = "Good evening, this is my own voice."


def user_voice_path(settings, user: str, name: str):
    return settings.data_dir / "storage" / user / "model" / "cosyvoice" / f"{name}.pt"


def test_clone_for_a_user_lands_in_their_namespace(settings, client, female_prompt):
    response = clone(client, "mine", female_prompt, user_id="alice")
    assert response.status_code == 200, response.text
    stored = torch.load(user_voice_path(settings, "alice", "mine"), weights_only=True)
    assert stored["engine"] == "espeak" and stored["variant"] == "female"
    assert (settings.data_dir / "storage" / "alice" / "model" / "cosyvoice" / "sources" / "mine.txt").exists()
    listed = client.get("/get_available_spks", params={"user_id": "alice"}).json()
    assert listed["cloned"] == ["mine"] and "中文女" in listed["builtin"]
    assert client.get("/get_available_spks").json()["cloned"] == []  # not in the shared library
    spoken = decode(client.post("/tts", json={"tts_text": TEXT, "spk_id": "mine", "user_id": "alice"}).content)
    assert spoken.median_f0() > 170


def test_one_user_never_sees_or_uses_anothers_voice(client, female_prompt):
    clone(client, "secret", female_prompt, user_id="alice")
    assert client.get("/get_available_spks", params={"user_id": "bob"}).json()["cloned"] == []
    for body in (
        {"tts_text": TEXT, "spk_id": "secret", "user_id": "bob"},
        {"tts_text": TEXT, "spk_id": "secret"},
    ):
        assert client.post("/tts", json=body).status_code == 404
    body = {"mode": "预训练音色", "tts_text": TEXT, "spk_customize": "secret", "user_id": "bob", "spk_id": "中文女"}
    response = client.post("/generate_audio", json=body)
    assert response.status_code == 404 and error_of(response)["message"].startswith("spk_customize:")
    assert clone(client, "secret", female_prompt, user_id="alice").status_code == 409
    assert clone(client, "secret", female_prompt, user_id="bob").status_code == 200  # bob's own, separate


def test_generate_audio_storage_fields(settings, client, male_prompt, female_prompt):
    prompts = settings.data_dir / "storage" / "carol" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "ref.wav").write_bytes(female_prompt)
    body = {
        "mode": "3s极速复刻",
        "tts_text": TEXT,
        "prompt_text": EN_PROMPT,
        "prompt_speech_16k": "prompts/ref.wav",
        "user_id": "carol",
        "exp_name": "exp1",
        "stream": "False",
    }
    first = decode(client.post("/generate_audio", json=body).content)
    assert first.median_f0() > 170
    assert user_voice_path(settings, "carol", "exp1").exists()  # 3s极速复刻 saved the voice it built
    for mode in ("预训练音色", "自然语言控制", "跨语种复刻"):
        body = {"mode": mode, "tts_text": TEXT, "spk_id": "英文男", "spk_customize": "exp1", "user_id": "carol"}
        body |= {"prompt_text": "speak slowly", "stream": "False"}
        response = client.post("/generate_audio", json=body)
        assert response.status_code == 200, (mode, response.text)
        assert decode(response.content).median_f0() > 170, mode  # the custom voice, not 英文男
    body = {"mode": "3s极速复刻", "tts_text": TEXT, "prompt_text": EN_PROMPT, "user_id": "carol"}
    response = client.post("/generate_audio", json=body | {"prompt_speech_16k": "carol/prompts/missing.wav"})
    assert response.status_code == 404 and error_of(response)["message"].startswith("prompt_speech_16k:")


HOSTILE_NAMES = ["../alice", "/etc/passwd", "a/../b", "a\\b", "x\x00y", "..", "n" * 65, "", "a b", "\U00020000" * 40]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_before_reaching_storage(settings, client, male_prompt, name):
    def field_error(response, field):
        assert 400 <= response.status_code < 500, response.text
        assert error_of(response)["message"].startswith(f"{field}:"), error_of(response)
        return response

    if name:
        field_error(clone(client, "ok", male_prompt, user_id=name), "user_id")
        field_error(clone(client, name, male_prompt, user_id="alice"), "spk_id")
        base = {"mode": "预训练音色", "tts_text": TEXT, "spk_id": "中文女", "user_id": "alice"}
        field_error(client.post("/generate_audio", json=base | {"spk_customize": name}), "spk_customize")
        zero_shot = {"mode": "3s极速复刻", "tts_text": TEXT, "prompt_text": EN_PROMPT, "user_id": "alice"}
        field_error(client.post("/generate_audio", json=zero_shot | {"prompt_speech_16k": name}), "prompt_speech_16k")
        files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
        response = client.post("/generate_audio", data=zero_shot | {"exp_name": name}, files=files)
        field_error(response, "exp_name")
    assert not list((settings.data_dir / "storage").rglob("*.pt")) if (settings.data_dir / "storage").exists() else True


def test_prompt_speech_16k_is_never_a_local_path(settings, client):
    secret = settings.data_dir / "secret.wav"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"RIFF")
    body = {"mode": "3s极速复刻", "tts_text": TEXT, "prompt_text": EN_PROMPT, "user_id": "alice"}
    for key in (str(secret), "../secret.wav", "../../data/secret.wav"):
        response = client.post("/generate_audio", json=body | {"prompt_speech_16k": key})
        assert response.status_code in (400, 422), key
        assert error_of(response)["message"].startswith("prompt_speech_16k:")


@pytest.mark.parametrize("kind", ["code", "truncated", "not_torch", "wrong_model", "bad_values", "odd_types"])
def test_hostile_voice_files_are_refused_and_nothing_runs(settings, client, tmp_path, kind):
    path = user_voice_path(settings, "mallory", "evil")
    path.parent.mkdir(parents=True)
    path.write_bytes(hostile_voice_files(tmp_path)[kind])
    body = {"mode": "预训练音色", "tts_text": TEXT, "spk_id": "中文女", "spk_customize": "evil", "user_id": "mallory"}
    response = client.post("/generate_audio", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith("spk_customize:")
    assert not (tmp_path / "pwned").exists()
    assert client.get("/health").json()["status"] == "ok"


def test_the_download_cache_is_bounded_and_keyed_by_etag(tmp_path):
    from app.core.user_voices import DownloadCache

    cache = DownloadCache(tmp_path / "cache", max_bytes=150)
    cache.put("a", "etag1", b"a" * 60)
    cache.put("b", "etag1", b"b" * 60)
    assert cache.get("a", "etag1") == b"a" * 60  # a is now the most recently used
    assert cache.get("a", "etag2") is None  # another ETag: the object changed
    cache.put("c", "etag1", b"c" * 60)  # over 150 bytes: the least recently used (b) goes
    assert cache.get("b", "etag1") is None
    assert cache.get("a", "etag1") == b"a" * 60 and cache.get("c", "etag1") == b"c" * 60
    cache.put("huge", "etag1", b"h" * 151)  # larger than the whole cache: not kept
    assert cache.get("huge", "etag1") is None
    assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir()) <= 150


def test_storage_keys_that_are_not_objects(settings, client, female_prompt):
    clone(client, "v1", female_prompt, user_id="alice")
    body = {"mode": "3s极速复刻", "tts_text": TEXT, "prompt_text": EN_PROMPT, "user_id": "alice"}
    for key in ("model/cosyvoice/v1.pt/x", "model/cosyvoice", "/".join(["d"] * 9)):
        response = client.post("/generate_audio", json=body | {"prompt_speech_16k": key})
        assert response.status_code in (404, 422), (key, response.text)
        assert error_of(response)["message"].startswith("prompt_speech_16k:")


def test_a_user_deletes_their_own_voice_only(settings, client, female_prompt):
    clone(client, "gone", female_prompt, user_id="alice")
    clone(client, "gone", female_prompt, user_id="bob")
    assert client.delete("/voices/gone", params={"user_id": "alice"}).status_code == 200
    assert not user_voice_path(settings, "alice", "gone").exists()
    assert not list((settings.data_dir / "storage" / "alice").rglob("gone.*"))  # its source went too
    assert user_voice_path(settings, "bob", "gone").exists()  # bob's voice of the same name stays
    response = client.delete("/voices/gone", params={"user_id": "alice"})
    assert response.status_code == 404 and error_of(response)["message"].startswith("spk_id:")
    assert client.delete("/voices/gone", params={"user_id": "../bob"}).status_code == 422
