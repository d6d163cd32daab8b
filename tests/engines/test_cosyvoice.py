"""The CosyVoice contract, part 1: every endpoint and mode, and voices, through HTTP on the real engine.

Runs on the lane given to pytest (``--lane``): a tiny random CosyVoice2 on the cosyvoice2-fr-infer
wheel, or a tiny CosyVoice2 or CosyVoice3 on upstream's code (COSYVOICE_SRC). The weights are random,
so the audio is noise-like but real: every byte comes out of upstream's LLM, flow matching and vocoder.
"""

import base64

import numpy as np
import pytest
import torch

from app.core.engine import Mode, SynthesisRequest
from tests.support.audio import audible, decode_pcm
from tests.support.doors import clone, error_of
from tests.support.server import running
from tests.support.speech import EN_PROMPT, ENGINE_RATE, TWO_SENTENCES, ZH_TEXT

MARK = "<|endofprompt|>"
LOG_MEL_FLOOR = float(np.log(1e-5))  # matcha's mel_spectrogram clamps at 1e-5


def b64(prompt: bytes) -> str:
    return base64.b64encode(prompt).decode()


def test_health_names_the_engine_and_its_speakers(cv, lane):
    health = cv.get("/health").json()
    assert health["engine"] == "cosyvoice" and health["sample_rate"] == ENGINE_RATE
    assert health["engine_model"].startswith(f"CosyVoice{lane.generation} from ")
    assert {"中文女", "英文男"} <= set(cv.get("/get_available_spks").json()["builtin"])


def _endpoint_calls(prompt: bytes) -> dict:
    upload = {"prompt_audio": ("p.wav", prompt, "audio/wav")}
    cloned = {"tts_text": ZH_TEXT, "spk_id": "guide"}
    with_transcript = {"tts_text": ZH_TEXT, "prompt_text": EN_PROMPT}
    return {
        "tts builtin": ("/tts", {"json": {"tts_text": ZH_TEXT, "spk_id": "中文女"}}),
        "tts cloned": ("/tts", {"json": cloned}),
        "zero_shot upload": ("/tts/zero_shot", {"data": with_transcript, "files": upload}),
        "zero_shot base64": ("/tts/zero_shot", {"json": with_transcript | {"prompt_audio_base64": b64(prompt)}}),
        "zero_shot cloned": ("/tts/zero_shot", {"json": cloned}),
        "cross_lingual upload": ("/tts/cross_lingual", {"data": {"tts_text": "Hello, my friend."}, "files": upload}),
        "cross_lingual cloned": ("/tts/cross_lingual", {"json": cloned | {"tts_text": "Hello there."}}),
        "instruct cloned": ("/tts/instruct", {"json": cloned | {"instruct_text": "用开心的语气说"}}),
        "instruct upload": (
            "/tts/instruct",
            {"data": {"tts_text": ZH_TEXT, "instruct_text": "Slowly."}, "files": upload},
        ),
    }


@pytest.mark.parametrize("stream", [True, False])
def test_every_synthesis_endpoint_and_mode(cv, male_prompt, stream):
    assert clone(cv, "guide", male_prompt).status_code == 200
    for name, (path, request) in _endpoint_calls(male_prompt).items():
        form = "json" if "json" in request else "data"
        response = cv.post(path, **request | {form: request[form] | {"stream": stream}})
        assert response.headers.get("content-type") == "audio/mpeg", (name, response.text)
        audible(response)
    for speaker in ("中文女", "guide"):
        response = cv.post("/tts/pcm", json={"tts_text": ZH_TEXT, "spk_id": speaker, "stream": stream})
        assert response.headers["x-sample-rate"] == str(ENGINE_RATE)
        assert decode_pcm(response.content, ENGINE_RATE).seconds > 0.2


def test_voices_and_the_seed_storage_fields(cv_settings, cv, male_prompt):
    """/voices and /generate_audio's OSS-style fields on the real engine: a prompt in the user's storage
    (prompt_speech_16k) makes a voice that exp_name saves and spk_customize then speaks with."""
    prompts = cv_settings.data_dir / "storage" / "carol" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "ref.wav").write_bytes(male_prompt)
    body = {"mode": "3s极速复刻", "tts_text": ZH_TEXT, "prompt_text": EN_PROMPT, "prompt_speech_16k": "prompts/ref.wav"}
    audible(cv.post("/generate_audio", json=body | {"user_id": "carol", "exp_name": "exp1", "stream": "False"}))
    assert (cv_settings.data_dir / "storage" / "carol" / "model" / "cosyvoice" / "exp1.pt").is_file()
    for mode in ("预训练音色", "3s极速复刻", "跨语种复刻", "自然语言控制"):
        body = {"mode": mode, "tts_text": ZH_TEXT, "spk_customize": "exp1", "user_id": "carol", "prompt_text": "慢一点"}
        audible(cv.post("/generate_audio", json=body))
    assert clone(cv, "temp", male_prompt).status_code == 200
    described = cv.get("/voices/temp").json()
    assert described["kind"] == "zero_shot" and described["prompt_seconds"] > 3
    assert cv.delete("/voices/temp").status_code == 200
    assert "temp" not in cv.get("/get_available_spks").json()["cloned"]
    response = cv.post("/tts", json={"tts_text": ZH_TEXT, "spk_id": "temp"})
    assert response.status_code == 404 and error_of(response)["message"].startswith("spk_id:")


GENERATE = {
    "预训练音色 builtin": {"mode": "预训练音色", "spk_id": "中文女"},
    "预训练音色 cloned": {"mode": "预训练音色", "spk_id": "voice"},
    "3s极速复刻 upload": {"mode": "3s极速复刻", "prompt_text": EN_PROMPT, "upload": True},
    "3s极速复刻 cloned": {"mode": "3s极速复刻", "spk_id": "voice"},
    "跨语种复刻 upload": {"mode": "跨语种复刻", "upload": True},
    "跨语种复刻 cloned": {"mode": "跨语种复刻", "spk_id": "voice"},
    "自然语言控制 cloned": {"mode": "自然语言控制", "spk_id": "voice", "prompt_text": "用悲伤的语气说"},
    "自然语言控制 upload": {"mode": "自然语言控制", "prompt_text": "用悲伤的语气说", "upload": True},
}


@pytest.mark.parametrize("stream", ["True", "False"])
def test_generate_audio_every_mode(cv, male_prompt, stream):
    assert clone(cv, "voice", male_prompt).status_code == 200
    for name, fields in GENERATE.items():
        body = {"tts_text": ZH_TEXT, "stream": stream, "seed": 3, **fields}
        if body.pop("upload", False):
            body["prompt_audio_base64"] = b64(male_prompt)
        response = cv.post("/generate_audio", json=body)
        expected = "audio/mpeg" if stream == "True" else "audio/wav"
        assert response.headers.get("content-type") == expected, (name, response.text)
        audible(response)


def test_instructions_need_a_voice_with_a_prompt(cv):
    response = cv.post("/tts/instruct", json={"tts_text": ZH_TEXT, "spk_id": "中文女", "instruct_text": "慢一点"})
    assert response.status_code == 422 and "built-in SFT speaker" in error_of(response)["message"]
    response = cv.post("/tts/instruct", json={"tts_text": ZH_TEXT, "instruct_text": "慢一点"})
    assert response.status_code == 400 and error_of(response)["message"].startswith("spk_id:")


def test_clone_restart_then_use_and_upstream_reads_the_same_dir(cv_settings, lane, male_prompt):
    with running(cv_settings) as client:
        response = clone(client, "narrator", male_prompt)
        assert response.status_code == 200, response.text
    with running(cv_settings) as client:
        assert "narrator" in client.get("/get_available_spks").json()["cloned"]
        audible(client.post("/tts/zero_shot", json={"tts_text": ZH_TEXT, "spk_id": "narrator"}))
        upstream_model = client.app.state.speech.engine._model
        # an upstream model pointed at the same dir lists the voice and speaks with it
        final = {} if lane.upstream else {"final": True}  # the fr-infer wheel's name for "load llm.pt"
        upstream = type(upstream_model)(str(cv_settings.model_dir), **final)
    assert "narrator" in upstream.list_available_spks()
    stored = torch.load(cv_settings.model_dir / "spk2info.pt", weights_only=True)["narrator"]
    assert (stored["prompt_text"] == upstream.frontend.tokenizer.tokenizer.convert_tokens_to_ids(MARK)).any() == (
        lane.generation == 3
    )  # CosyVoice3's prompt carries the marker its LLM asserts on
    if lane.generation == 3:  # its prompt features reach 12 kHz: made from the 24 kHz prompt, not from 16 kHz
        assert stored["prompt_speech_feat"][0, :, -8:].mean() > LOG_MEL_FLOOR + 1
    unused = "" if lane.upstream else torch.zeros(1, 0)
    chunks = list(upstream.inference_zero_shot(ZH_TEXT, "", unused, "narrator", text_frontend=False))
    assert sum(c["tts_speech"].shape[1] for c in chunks) > ENGINE_RATE // 5


def test_the_engine_never_changes_the_voice_it_is_given(cv, male_prompt):
    """Upstream's frontend changes the speaker entries it reads (the fr-infer one deletes keys from them in
    cross-lingual mode), and every sentence reads the entry again."""
    clone(cv, "steady", male_prompt)
    engine = cv.app.state.speech.engine
    voice = cv.app.state.speech.voices.library.get("steady").profile
    before = {key: value.clone() for key, value in voice.items()}
    for mode, extra in ((Mode.CROSS_LINGUAL, {}), (Mode.SFT, {}), (Mode.INSTRUCT, {"instruct_text": "Slowly."})):
        request = SynthesisRequest(mode, TWO_SENTENCES, voice=voice, stream=False, **extra)
        assert len(list(engine.synthesize(request))) == 2  # one chunk per sentence
    assert set(voice) == set(before)
    for key, value in before.items():
        assert torch.equal(voice[key], value), key


def test_a_builtin_speaker_entry_in_a_prompt_mode_is_a_422(cv_settings, cv):
    """A user's voice file may hold a built-in (SFT) entry: an embedding without a prompt."""
    folder = cv_settings.data_dir / "storage" / "alice" / "model" / "cosyvoice"
    folder.mkdir(parents=True)
    torch.save({"embedding": torch.randn(1, 192)}, folder / "plain.pt")
    for path in ("/tts/zero_shot", "/tts/cross_lingual"):
        response = cv.post(path, json={"tts_text": ZH_TEXT, "spk_id": "plain", "user_id": "alice"})
        assert response.status_code == 422, response.text
        assert error_of(response)["message"].startswith("spk_id: 'plain' is a built-in SFT speaker")
    body = {"mode": "3s极速复刻", "tts_text": ZH_TEXT, "spk_customize": "plain", "user_id": "alice"}
    response = cv.post("/generate_audio", json=body)
    assert response.status_code == 422 and error_of(response)["message"].startswith("spk_customize:")
    audible(cv.post("/generate_audio", json=body | {"mode": "预训练音色"}))  # what it is made for


def _other_generation(entry: dict, mark_id: int, generation: int) -> dict:
    """The same voice as the other generation writes it: CosyVoice3's prompt text starts with a system
    prompt ending in <|endofprompt|>; CosyVoice2's has none."""
    text = entry["prompt_text"]
    if generation == 2:
        text = torch.cat([torch.tensor([[mark_id]], dtype=text.dtype), text], dim=1)
    else:
        text = text[:, (text[0] == mark_id).nonzero()[0, 0] + 1 :]
    return {**entry, "prompt_text": text, "prompt_text_len": torch.tensor([text.shape[1]], dtype=torch.int32)}


def test_a_voice_of_the_other_generation_is_a_clear_422(cv_settings, cv, lane, male_prompt):
    assert clone(cv, "mine", male_prompt, user_id="alice").status_code == 200
    folder = cv_settings.data_dir / "storage" / "alice" / "model" / "cosyvoice"
    mark_id = cv.app.state.speech.engine.sizes.mark_id
    torch.save(_other_generation(torch.load(folder / "mine.pt"), mark_id, lane.generation), folder / "other.pt")
    body = {"tts_text": ZH_TEXT, "spk_id": "other", "user_id": "alice"}
    response = cv.post("/tts/zero_shot", json=body)
    assert response.status_code == 422, response.text
    other = 5 - lane.generation
    assert f"made on CosyVoice{other}; this server runs CosyVoice{lane.generation}" in error_of(response)["message"]
    audible(cv.post("/tts/zero_shot", json=body | {"spk_id": "mine"}))


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
    torch.save(_tampered(torch.load(path / "v1.pt", weights_only=True), change), path / "bad.pt")
    body = {"tts_text": ZH_TEXT, "spk_id": "bad", "user_id": "alice"}
    response = cv.post("/tts/zero_shot", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith("spk_id:")
    listed = cv.get("/voices/bad", params={"user_id": "alice"})
    assert listed.status_code == 422 and error_of(listed)["message"] == error_of(response)["message"]
    audible(cv.post("/tts/zero_shot", json=body | {"spk_id": "v1"}))  # the engine is not stuck
