"""The real upstream CosyVoice2 code path, through HTTP, on a tiny randomly initialised model.

The model is built by tests/tiny_cosyvoice.py (no download); the weights are random, so the audio is
noise-like but real: every byte comes out of upstream's LLM, flow matching and HiFT vocoder.
"""

import base64
import concurrent.futures
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from app.config import Settings
from tests.audio_utils import decode, decode_pcm
from tests.conftest import EN_PROMPT, clone, error_of, live_server, running
from tests.tiny_cosyvoice import build_tiny_cosyvoice2

RATE = 24000
TEXT = "你好，欢迎使用语音合成服务。"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_cosyvoice2(tmp_path_factory.mktemp("models") / "CosyVoice2-tiny")


@pytest.fixture
def cv_settings(tiny_model, tmp_path) -> Settings:
    """A model dir of its own per test: the weights are links, spk2info.pt is a copy that tests change."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for item in tiny_model.iterdir():
        if item.name != "spk2info.pt":
            (model_dir / item.name).symlink_to(item)
    shutil.copy(tiny_model / "spk2info.pt", model_dir / "spk2info.pt")
    return Settings(engine="auto", model_dir=model_dir, data_dir=tmp_path / "data", text_frontend=False)


@pytest.fixture
def cv(cv_settings):
    with running(cv_settings) as client:
        yield client


def audio(response) -> "Decoded":  # noqa: F821
    assert response.status_code == 200, response.text
    decoded = decode(response.content)
    assert decoded.rate == RATE
    assert decoded.seconds > 0.2
    assert np.isfinite(decoded.samples).all() and decoded.rms > 1e-4
    return decoded


def prompt_b64(prompt: bytes) -> str:
    return base64.b64encode(prompt).decode()


def test_health_reports_the_cosyvoice_engine(cv):
    health = cv.get("/health").json()
    assert health["engine"] == "cosyvoice" and health["sample_rate"] == RATE
    assert "found a CosyVoice model" in health["engine_reason"]
    assert "中文女" in cv.get("/get_available_spks").json()["builtin"]


def test_clone_restart_list_then_stream_by_spk_id(cv_settings, male_prompt):
    with running(cv_settings) as client:
        response = clone(client, "narrator", male_prompt)
        assert response.status_code == 200, response.text
        assert response.json()["voice"]["kind"] == "zero_shot"
    with running(cv_settings) as client:
        assert "narrator" in client.get("/get_available_spks").json()["cloned"]
        body = {"tts_text": TEXT, "spk_id": "narrator", "stream": True}
        audio(client.post("/tts/zero_shot", json=body))


def test_cloned_voices_use_upstreams_exact_format(cv_settings, cv, male_prompt):
    """An upstream CosyVoice2 pointed at the same dir lists the cloned voice and synthesizes with it."""
    clone(cv, "shared", male_prompt)
    from cosyvoice.cli.cosyvoice import CosyVoice2

    upstream = CosyVoice2(str(cv_settings.model_dir), final=True)
    assert "shared" in upstream.list_available_spks()
    stored = torch.load(cv_settings.model_dir / "spk2info.pt", weights_only=True)["shared"]
    assert set(stored) == {
        "prompt_text", "prompt_text_len", "llm_prompt_speech_token", "llm_prompt_speech_token_len",
        "flow_prompt_speech_token", "flow_prompt_speech_token_len", "prompt_speech_feat",
        "prompt_speech_feat_len", "llm_embedding", "flow_embedding",
    }  # fmt: skip
    chunks = list(upstream.inference_zero_shot(TEXT, "", torch.zeros(1, 0), "shared", text_frontend=False))
    assert sum(c["tts_speech"].shape[1] for c in chunks) > RATE // 5


def test_stored_entries_are_copied_never_mutated(cv_settings, cv, male_prompt):
    clone(cv, "steady", male_prompt)
    before = torch.load(cv_settings.model_dir / "spk2info.pt", weights_only=True)["steady"]
    for mode, extra in (("sft", {}), ("cross_lingual", {}), ("instruct", {"instruct_text": "Speak slowly."})):
        body = {"mode": mode, "tts_text": TEXT, "spk_id": "steady", "stream": "False", **extra}
        audio(cv.post("/generate_audio", json=body))
    library = cv.app.state.speech.voices
    after = library.get("steady").profile
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_zero_shot_with_an_uploaded_prompt(cv, male_prompt):
    body = {"tts_text": TEXT, "prompt_text": EN_PROMPT, "prompt_audio_base64": prompt_b64(male_prompt)}
    audio(cv.post("/tts/zero_shot", json=body))


def test_cross_lingual_and_instruct(cv, male_prompt):
    files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
    audio(cv.post("/tts/cross_lingual", data={"tts_text": "Hello there, my friend."}, files=files))
    clone(cv, "guide", male_prompt)
    body = {"tts_text": TEXT, "spk_id": "guide", "instruct_text": "用开心的语气说"}
    audio(cv.post("/tts/instruct", json=body))
    response = cv.post("/tts/instruct", json={"tts_text": TEXT, "spk_id": "中文女", "instruct_text": "慢一点"})
    assert response.status_code == 422 and "SFT speaker" in error_of(response)["message"]


def test_sft_speaker_by_tts_and_pcm(cv):
    audio(cv.post("/tts", json={"tts_text": TEXT, "spk_id": "中文女"}))
    response = cv.post("/tts/pcm", json={"tts_text": TEXT, "spk_id": "中文女"})
    assert response.headers["x-sample-rate"] == str(RATE)
    assert decode_pcm(response.content, RATE).seconds > 0.2


GENERATE = {
    "预训练音色": {"spk_id": "中文女"},
    "3s极速复刻": {"prompt_text": EN_PROMPT},
    "跨语种复刻": {},
    "自然语言控制": {"spk_id": "voice", "prompt_text": "用悲伤的语气说"},
}


@pytest.mark.parametrize("stream", ["True", "False"])
def test_generate_audio_all_modes(cv, male_prompt, stream):
    clone(cv, "voice", male_prompt)
    for mode, extra in GENERATE.items():
        body = {"mode": mode, "tts_text": TEXT, "stream": stream, "seed": 3, **extra}
        if mode in ("3s极速复刻", "跨语种复刻"):
            body["prompt_audio_base64"] = prompt_b64(male_prompt)
        response = cv.post("/generate_audio", json=body)
        expected = "audio/mpeg" if stream == "True" else "audio/wav"
        assert response.headers.get("content-type") == expected, (mode, response.text)
        audio(response)


def test_same_seed_same_audio(cv, male_prompt):
    clone(cv, "seeded", male_prompt)

    def run(seed):
        body = {"mode": "3s极速复刻", "tts_text": TEXT, "spk_id": "seeded", "seed": seed, "stream": "False"}
        return cv.post("/generate_audio", json=body).content

    first, second, other = run(11), run(11), run(12)
    assert first == second
    assert first != other
    audio_of_first = decode(first)
    assert audio_of_first.seconds > 0.2


def test_concurrent_streams_and_no_hop_length_creep(cv_settings, male_prompt):
    """Two overlapping streams both complete; a later request's first chunk is as short as the first's."""
    with live_server(cv_settings) as (url, app):
        synth = app.state.speech.synthesizer
        files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
        httpx.post(f"{url}/clone", data={"spk_id": "s", "prompt_text": EN_PROMPT}, files=files, timeout=120)

        def stream(_=None):
            body = {"mode": "3s极速复刻", "tts_text": TEXT, "spk_id": "s", "stream": "True"}
            return decode(httpx.post(f"{url}/generate_audio", json=body, timeout=300).content)

        stream()
        first = synth.recent[-1]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(stream, range(2)))
        for decoded in results:
            assert decoded.rate == RATE and decoded.seconds > 0.5 and np.isfinite(decoded.samples).all()
        stream()
        third = synth.recent[-1]
        assert [r.outcome for r in synth.recent] == ["completed"] * 4
        assert first.samples > first.first_chunk_samples  # it really streamed in several chunks
        assert third.first_chunk_samples <= first.first_chunk_samples, (first, third)


def test_missing_model_dir_is_a_clear_startup_error(tmp_path):
    settings = Settings(engine="cosyvoice", model_dir=tmp_path / "nowhere", data_dir=tmp_path / "d")
    with pytest.raises(RuntimeError, match="nowhere.*does not exist"), running(settings):
        pass


def test_a_client_leaving_mid_stream_stops_upstreams_llm_thread(cv_settings):
    text = "你好，欢迎使用语音合成服务。今天天气很好，我们一起去公园散步吧。"
    with live_server(cv_settings) as (url, app):
        model = app.state.speech.engine._model.model
        body = {"tts_text": text, "spk_id": "中文女", "stream": True}
        with httpx.stream("POST", f"{url}/tts", json=body, timeout=120) as response:
            chunks = response.iter_raw()
            assert next(chunks)
        synth = app.state.speech.synthesizer
        deadline = time.monotonic() + 30
        while (synth.active or model.tts_speech_token_dict) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert synth.active == 0 and synth.stats.cancelled == 1
        assert model.tts_speech_token_dict == {} and model.hift_cache_dict == {}  # upstream state dropped
        assert not [t for t in threading.enumerate() if "llm_job" in repr(getattr(t, "_target", ""))]


def _tampered(entry: dict, change: str) -> dict:
    entry = dict(entry)
    if change == "text_ids":
        entry["prompt_text"] = torch.full_like(entry["prompt_text"], 10**7)
    elif change == "float_tokens":
        entry["llm_prompt_speech_token"] = entry["llm_prompt_speech_token"].float()
    elif change == "float64_embedding":
        entry["llm_embedding"] = entry["llm_embedding"].double()
    elif change == "two_speakers":
        entry["flow_embedding"] = entry["flow_embedding"].repeat(2, 1)
    elif change == "one_d_tokens":
        entry["flow_prompt_speech_token"] = entry["flow_prompt_speech_token"].reshape(-1)
    return entry


@pytest.mark.parametrize("change", ["text_ids", "float_tokens", "float64_embedding", "two_speakers", "one_d_tokens"])
def test_a_damaged_voice_file_is_refused_and_the_engine_stays_free(cv_settings, cv, male_prompt, change):
    assert clone(cv, "v1", male_prompt, user_id="alice").status_code == 200
    path = cv_settings.data_dir / "storage" / "alice" / "model" / "cosyvoice"
    entry = torch.load(path / "v1.pt", weights_only=True)
    torch.save(_tampered(entry, change), path / "bad.pt")
    body = {"tts_text": TEXT, "spk_id": "bad", "user_id": "alice", "stream": True}
    response = cv.post("/tts/zero_shot", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith("spk_id:")
    assert cv.get("/voices/bad", params={"user_id": "alice"}).status_code == 422
    audio(cv.post("/tts/zero_shot", json=body | {"spk_id": "v1"}))  # the engine is not stuck
