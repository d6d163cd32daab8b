"""Property-based: any JSON object or form over the request models' fields gets an answer below 500, in the door's
shape. Hypothesis runs derandomized (the same examples in every run, CI included) with a bounded count."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.doors import OPENAI, SEED, error_of, openai_error

SEED_FIELDS = [
    "tts_text", "spk_id", "speed", "seed", "stream", "user_id", "prompt_text", "prompt_audio_base64",
    "instruct_text", "mode", "spk_customize", "prompt_speech_16k", "exp_name", "overwrite",
]  # fmt: skip
OPENAI_FIELDS = ["model", "input", "voice", "instructions", "response_format", "speed", "stream_format", "sample_rate"]
# values near what the models accept, and far from it
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["中文女", "alloy", "tts-1", "mp3", "sse", "预训练音色", "3s极速复刻", "True", "1.5", "../x"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
JSON = {"content-type": "application/json"}
RUNS = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(response, path: str) -> None:
    assert response.status_code < 500, (path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        (openai_error if path.startswith("/v1/") else error_of)(response)


@RUNS
@given(path=st.sampled_from(SEED), body=st.dictionaries(st.sampled_from(SEED_FIELDS), values, max_size=7))
def test_any_json_body_on_the_seed_door(client, path, body):
    # NaN and Infinity as Python's json writes them: not JSON, but what many clients send
    _check(client.post(path, content=json.dumps(body), headers=JSON), path)


@RUNS
@given(path=st.sampled_from(SEED), body=st.dictionaries(st.sampled_from(SEED_FIELDS), scalars, max_size=7))
def test_any_form_on_the_seed_door(client, path, body):
    fields = {name: "" if value is None else str(value) for name, value in body.items()}
    _check(client.post(path, data=fields), path)


@RUNS
@given(body=st.dictionaries(st.sampled_from(OPENAI_FIELDS), values, max_size=8))
def test_any_json_body_on_the_openai_door(client, body):
    body = {"model": "tts-1", "input": "Hi.", "voice": "alloy", **body}
    _check(client.post(OPENAI[0], content=json.dumps(body), headers=JSON), OPENAI[0])


@pytest.mark.parametrize("path", ["/tts", "/tts/pcm", "/generate_audio", *OPENAI])
def test_near_valid_bodies_are_served(client, path):
    """The properties above are not vacuous: bodies like the generated ones are served."""
    body = {"tts_text": "Hi.", "spk_id": "中文女", "mode": "预训练音色", "input": "Hi.", "voice": "alloy"}
    assert client.post(path, json={**body, "model": "tts-1"}).status_code == 200
