"""Every seed endpoint and mode through HTTP, asserting on the decoded audio."""

import base64

import numpy as np
import pytest

from tests.support.audio import decode, decode_pcm
from tests.support.doors import clone, error_of
from tests.support.speech import EN_PROMPT, ENGINE_RATE

ZH_TEXT = "你好，欢迎使用语音合成服务。今天天气很好！"
EN_TEXT = "Hello, and welcome to the voice service. The weather is lovely today!"


def assert_speech(decoded, min_seconds: float = 1.0, max_seconds: float = 30.0):
    assert decoded.rate == ENGINE_RATE
    assert min_seconds <= decoded.seconds <= max_seconds, decoded.seconds
    assert decoded.rms > 0.02, "audio is (nearly) silent"
    return decoded


def test_health_reports_engine_rate_and_voices(client):
    health = client.get("/health").json()
    assert health["engine"] == "espeak"
    assert health["sample_rate"] == ENGINE_RATE
    assert health["storage"] == "local"
    assert "no CosyVoice model" in health["engine_reason"]
    assert health["voices"] == len(client.get("/get_available_spks").json()["speakers"])


def test_available_speakers_are_named_like_cosyvoice_sft(client):
    body = client.get("/get_available_spks").json()
    assert {"中文女", "中文男", "英文女", "英文男"} <= set(body["builtin"])
    assert body["cloned"] == []
    assert body["speakers"] == body["builtin"]


@pytest.mark.parametrize("speaker,text", [("中文女", ZH_TEXT), ("英文男", EN_TEXT), ("粤语女", ZH_TEXT)])
def test_tts_streams_mp3(client, speaker, text):
    response = client.post("/tts", json={"tts_text": text, "spk_id": speaker})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    assert_speech(decode(response.content))


def test_tts_accepts_form_fields_too(client):
    response = client.post("/tts", data={"tts_text": EN_TEXT, "spk_id": "英文女", "speed": "1.5"})
    slow = client.post("/tts", data={"tts_text": EN_TEXT, "spk_id": "英文女", "speed": "0.75"})
    fast_seconds, slow_seconds = decode(response.content).seconds, decode(slow.content).seconds
    assert slow_seconds > 1.6 * fast_seconds


def test_tts_pcm_streams_raw_s16le_with_format_headers(client, engine):
    response = client.post("/tts/pcm", json={"tts_text": ZH_TEXT, "spk_id": "中文男"})
    assert response.status_code == 200
    assert response.headers["x-sample-rate"] == str(ENGINE_RATE)
    assert response.headers["x-channels"] == "1"
    assert response.headers["x-bit-depth"] == "16"
    decoded = assert_speech(decode_pcm(response.content, ENGINE_RATE))
    from tests.support.speech import spoken

    assert decoded.samples.size == spoken(engine, ZH_TEXT, "中文男").size  # every sample the engine made


def test_zero_shot_from_base64_prompt(client, female_prompt, male_prompt):
    def zero_shot(prompt):
        body = {"tts_text": EN_TEXT, "prompt_text": EN_PROMPT, "prompt_audio_base64": base64.b64encode(prompt).decode()}
        response = client.post("/tts/zero_shot", json=body)
        assert response.status_code == 200, response.text
        return assert_speech(decode(response.content))

    assert zero_shot(female_prompt).median_f0() > 1.5 * zero_shot(male_prompt).median_f0()


def test_zero_shot_accepts_a_multipart_prompt_file_and_a_data_url(client, male_prompt):
    files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
    response = client.post("/tts/zero_shot", data={"tts_text": EN_TEXT, "prompt_text": EN_PROMPT}, files=files)
    assert_speech(decode(response.content))
    data_url = "data:audio/wav;base64," + base64.b64encode(male_prompt).decode()
    body = {"tts_text": EN_TEXT, "prompt_text": EN_PROMPT, "prompt_audio_base64": data_url}
    assert_speech(decode(client.post("/tts/zero_shot", json=body).content))


def test_zero_shot_by_cloned_spk_id(client, male_prompt):
    assert clone(client, "narrator", male_prompt).status_code == 200
    response = client.post("/tts/zero_shot", json={"tts_text": ZH_TEXT, "spk_id": "narrator"})
    assert response.status_code == 200, response.text
    assert decode(response.content).median_f0() < 150


def test_zero_shot_needs_a_prompt_or_a_cloned_voice(client):
    response = client.post("/tts/zero_shot", json={"tts_text": EN_TEXT, "prompt_text": "hi"})
    assert response.status_code == 400  # a missing field: 400, as the seed's clients expect
    assert error_of(response)["message"].startswith("prompt_audio:")
    response = client.post("/tts/zero_shot", json={"tts_text": EN_TEXT, "spk_id": "中文女"})
    assert "built-in speaker" in error_of(response)["message"]


def test_cross_lingual_and_instruct_endpoints(client, chinese_prompt):
    body = {"tts_text": EN_TEXT, "prompt_audio_base64": base64.b64encode(chinese_prompt).decode()}
    assert_speech(decode(client.post("/tts/cross_lingual", json=body).content))
    plain = client.post("/tts", json={"tts_text": ZH_TEXT, "spk_id": "中文男"})
    slow = client.post("/tts/instruct", json={"tts_text": ZH_TEXT, "spk_id": "中文男", "instruct_text": "请慢一点说"})
    assert slow.status_code == 200
    assert decode(slow.content).seconds > 1.2 * decode(plain.content).seconds


GENERATE_CASES = {
    "预训练音色": {"spk_id": "中文女"},
    "3s极速复刻": {"prompt_text": EN_PROMPT},
    "跨语种复刻": {},
    "自然语言控制": {"spk_id": "中文男", "prompt_text": "用开心的语气说"},
}


@pytest.mark.parametrize("mode", list(GENERATE_CASES))
@pytest.mark.parametrize("stream", ["True", "False"])
def test_generate_audio_all_modes(client, male_prompt, mode, stream):
    fields = {"mode": mode, "tts_text": ZH_TEXT, "stream": stream, **GENERATE_CASES[mode]}
    files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")} if mode in ("3s极速复刻", "跨语种复刻") else None
    response = client.post("/generate_audio", data=fields, files=files)
    assert response.status_code == 200, response.text
    if stream == "True":
        assert response.headers["content-type"] == "audio/mpeg"
        assert response.headers["content-disposition"] == "inline; filename=sound.mp3"
    else:
        assert response.headers["content-type"] == "audio/wav"
        assert response.content[:4] == b"RIFF"
    assert_speech(decode(response.content))


def test_generate_audio_reads_the_seed_json_body_with_defaults(client):
    """The Flask original read a JSON body; stream defaults to "True" and seed/speed to 0/1.0."""
    response = client.post("/generate_audio", json={"mode": "预训练音色", "tts_text": ZH_TEXT, "spk_id": "中文女"})
    assert response.headers["content-type"] == "audio/mpeg"
    assert_speech(decode(response.content))
    english = client.post("/generate_audio", json={"mode": "sft", "tts_text": EN_TEXT, "spk_id": "英文女"})
    assert_speech(decode(english.content))


def test_generate_audio_uses_a_cloned_voice_for_zero_shot(client, female_prompt):
    clone(client, "anna", female_prompt)
    body = {"mode": "3s极速复刻", "tts_text": EN_TEXT, "spk_id": "anna", "stream": "False"}
    response = client.post("/generate_audio", json=body)
    assert decode(response.content).median_f0() > 170


def test_same_seed_same_audio(client, male_prompt):
    body = {"mode": "3s极速复刻", "tts_text": EN_TEXT, "prompt_text": EN_PROMPT, "seed": 42, "stream": "False"}
    body["prompt_audio_base64"] = base64.b64encode(male_prompt).decode()
    first = client.post("/generate_audio", json=body).content
    second = client.post("/generate_audio", json=body).content
    assert first == second
    assert_speech(decode(first))


def test_upload_audio_round_trips_to_zero_shot(client, male_prompt):
    response = client.post("/upload_audio", files={"file": ("voice.wav", male_prompt, "audio/wav")})
    body = response.json()
    assert body["filename"] == "voice.wav"
    assert base64.b64decode(body["audio_base64"]) == male_prompt
    request = {"tts_text": EN_TEXT, "prompt_text": EN_PROMPT, "prompt_audio_base64": body["audio_base64"]}
    assert_speech(decode(client.post("/tts/zero_shot", json=request).content))


def test_speed_and_seed_are_validated_by_name(client):
    for field, value in (("speed", 5), ("speed", "fast"), ("seed", -1)):
        response = client.post("/tts", json={"tts_text": EN_TEXT, "spk_id": "英文男", field: value})
        assert response.status_code == 422
        assert error_of(response)["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    "body,field",
    [
        ({"spk_id": "英文男"}, "tts_text"),
        ({"tts_text": "   ", "spk_id": "英文男"}, "tts_text"),
        ({"tts_text": "hi", "spk_id": "nobody"}, "spk_id"),
        ({"tts_text": "hi", "spk_id": "../../etc/passwd"}, "spk_id"),
        ({"tts_text": "x" * 6000, "spk_id": "英文男"}, "tts_text"),
    ],
)
def test_bad_tts_requests_name_the_field(client, body, field):
    response = client.post("/tts", json=body)
    assert 400 <= response.status_code < 500
    assert error_of(response)["message"].startswith(f"{field}:")


def test_generate_audio_rejects_bad_mode_and_stream(client):
    response = client.post("/generate_audio", json={"mode": "唱歌", "tts_text": "hi", "spk_id": "中文女"})
    assert error_of(response)["message"].startswith("mode:")
    response = client.post(
        "/generate_audio", json={"mode": "sft", "tts_text": "hi", "spk_id": "中文女", "stream": "maybe"}
    )
    assert error_of(response)["message"].startswith("stream:")
    response = client.post("/generate_audio", json={"mode": "自然语言控制", "tts_text": "hi", "spk_id": "中文女"})
    assert error_of(response)["message"].startswith("instruct_text:")


def test_generate_audio_storage_fields_need_a_user(client):
    body = {"mode": "预训练音色", "tts_text": "hi", "spk_id": "中文女", "spk_customize": "my_voice"}
    response = client.post("/generate_audio", json=body)
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("user_id:")


def test_malformed_bodies_get_json_errors(client):
    response = client.post("/tts", content=b"{not json", headers={"content-type": "application/json"})
    assert error_of(response)["message"].startswith("body:")
    response = client.post("/tts", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert error_of(response)["message"].startswith("body:")
    response = client.post("/tts", content=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert error_of(client.get("/nowhere"))["code"] == "not_found"
    assert error_of(client.get("/tts"))["code"] == "method_not_allowed"


def test_mp3_stream_is_one_stream_as_long_as_the_engine_output(client, engine):
    from tests.support.speech import spoken

    text = " ".join([EN_TEXT] * 4)
    produced = spoken(engine, text, "英文女").size
    decoded = decode(client.post("/tts", json={"tts_text": text, "spk_id": "英文女"}).content)
    assert decoded.rate == ENGINE_RATE
    assert produced <= decoded.samples.size <= produced + 576  # one MPEG-2 layer III frame
    assert np.isfinite(decoded.samples).all()


def test_text_with_an_unpaired_surrogate_is_refused(client):
    body = b'{"tts_text": "Hello. \\ud800 there", "spk_id": "\\u82f1\\u6587\\u7537"}'
    response = client.post("/tts", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("tts_text:")


@pytest.mark.parametrize("text", ["。。。", "...", "-", "\u200b", "!?"])
def test_text_with_nothing_to_speak_is_refused(client, text):
    response = client.post("/tts", json={"tts_text": text, "spk_id": "中文女"})
    assert response.status_code == 422
    assert "nothing to speak" in error_of(response)["message"]


def test_form_parts_of_the_wrong_kind_or_sent_twice(client, male_prompt):
    response = client.post("/tts", files={"tts_text": ("t.txt", b"hello")}, data={"spk_id": "英文男"})
    assert error_of(response)["message"] == "tts_text: sent as a file; expected a text field"
    fields = {"tts_text": "hi", "prompt_text": EN_PROMPT, "prompt_audio": "UklGRg=="}
    response = client.post("/tts/zero_shot", data=fields, files={"unused": ("u", b"")})
    assert error_of(response)["message"].startswith("prompt_audio: sent as text")
    twice = b"tts_text=one&tts_text=two&spk_id=%E8%8B%B1%E6%96%87%E7%94%B7"
    response = client.post("/tts", content=twice, headers={"content-type": "application/x-www-form-urlencoded"})
    assert error_of(response)["message"] == "tts_text: sent more than once"
