"""Upstream CosyVoice's runtime HTTP API, driven as upstream's client drives it: `requests` sending GET with a
multipart body, reading raw int16 PCM with iter_content (runtime/python/fastapi/client.py)."""

import logging

import numpy as np
import pytest
import requests

from tests.support.doors import clone
from tests.support.server import last_engine_seconds, live_server, long_settings
from tests.support.speech import EN_PROMPT, SENTENCE


@pytest.fixture
def served(tmp_path):
    with live_server(long_settings(tmp_path)) as (url, app):
        yield url, app


def _call(url: str, path: str, method: str = "GET", prompt: bytes | None = None, **fields) -> requests.Response:
    files = [("prompt_wav", ("prompt_wav", prompt, "application/octet-stream"))] if prompt is not None else None
    return requests.request(method, f"{url}{path}", data=fields, files=files, stream=True, timeout=120)


def _pcm(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    audio = b"".join(response.iter_content(chunk_size=16000))
    assert len(audio) % 2 == 0
    return np.frombuffer(audio, dtype="<i2")


CALLS = [
    ("/inference_sft", {"spk_id": "英文男"}, False),
    ("/inference_zero_shot", {"prompt_text": EN_PROMPT}, True),
    ("/inference_cross_lingual", {}, True),
    ("/inference_instruct", {"spk_id": "英文女", "instruct_text": "Speak slowly."}, False),
    ("/inference_instruct2", {"instruct_text": "Speak slowly."}, True),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("path", "fields", "prompted"), CALLS)
def test_every_call_answers_raw_pcm_at_the_engine_rate(served, male_prompt, method, path, fields, prompted):
    url, app = served
    response = _call(url, path, method, male_prompt if prompted else None, tts_text="Hello there.", **fields)
    samples = _pcm(response)
    rate = app.state.speech.engine.sample_rate
    assert response.headers["x-sample-rate"] == str(rate)
    assert samples.size == round(last_engine_seconds(app) * rate) and samples.size > rate // 4
    assert np.abs(samples).max() > 1000  # speech, not silence


def test_a_cloned_voice_is_a_speaker(served, male_prompt):
    url, app = served
    import httpx

    with httpx.Client(base_url=url) as client:
        clone(client, "vera", male_prompt)
    assert _pcm(_call(url, "/inference_sft", tts_text="Hello.", spk_id="vera")).size > 0


def test_audio_arrives_while_it_is_synthesized(served):
    url, app = served
    synth = app.state.speech.synthesizer
    with _call(url, "/inference_sft", tts_text=SENTENCE * 40, spk_id="英文男") as response:
        chunks = response.iter_content(chunk_size=4096)
        first = next(chunks)
        assert first and synth.active == 1, "the first bytes came only after synthesis ended"
        rest = sum(len(chunk) for chunk in chunks)
    assert rest > 100 * len(first)


@pytest.mark.parametrize(
    ("path", "fields", "prompt", "status", "detail"),
    [
        ("/inference_sft", {"spk_id": "英文男"}, None, 422, "tts_text: Field required"),
        ("/inference_sft", {"tts_text": "Hi.", "spk_id": "nobody"}, None, 404, "spk_id: no voice named 'nobody'"),
        ("/inference_sft", {"tts_text": "  ", "spk_id": "英文男"}, None, 422, "tts_text: must not be empty"),
        ("/inference_zero_shot", {"tts_text": "Hi.", "prompt_text": "x"}, b"not audio", 422, "prompt_wav: "),
        ("/inference_zero_shot", {"tts_text": "Hi.", "prompt_text": "x"}, None, 422, "prompt_wav: Field required"),
        ("/inference_instruct", {"tts_text": "Hi.", "spk_id": "英文男"}, None, 422, "instruct_text: Field required"),
    ],
)
def test_bad_input_is_a_json_4xx_naming_the_field(served, caplog, path, fields, prompt, status, detail):
    url, _app = served
    with caplog.at_level(logging.INFO):
        response = _call(url, path, prompt=prompt, **fields)
    assert response.status_code == status and response.json()["detail"].startswith(detail), response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_invalid_utf8_in_a_field_is_refused(served):
    url, _app = served
    response = requests.get(
        f"{url}/inference_sft", files={"tts_text": (None, b"caf\xe9"), "spk_id": (None, "英文男".encode())}, timeout=30
    )
    assert response.status_code == 400 and response.json() == {"detail": "tts_text: not valid UTF-8 text"}
