"""Each door words the core's errors in its own shape and field names; a name a request does not use never fails it."""

import base64

import pytest
from fastapi.testclient import TestClient

from app.core.errors import EngineFailure
from app.main import create_app
from tests.support.audio import decode, decode_pcm
from tests.support.doors import clone, error_of
from tests.support.speech import EN_PROMPT

SPEECH = "/v1/audio/speech"


def openai_error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_names_a_request_does_not_use_are_not_checked(client, male_prompt):
    """Prompt audio wins over spk_id in 3s极速复刻, and no user store is touched: neither name is checked."""
    body = {
        "tts_text": "Hello.",
        "prompt_text": EN_PROMPT,
        "prompt_audio_base64": base64.b64encode(male_prompt).decode(),
        "spk_id": "not a name",
        "user_id": "a@b",
    }
    response = client.post("/tts/zero_shot", json=body)
    assert response.status_code == 200, response.text
    assert decode(response.content).seconds > 0.3


def test_the_text_is_checked_before_any_name(client):
    response = client.post("/tts", json={"tts_text": " ", "spk_id": "bad/name"})
    assert response.status_code == 400 and error_of(response) == {
        "code": "missing_field",
        "message": "tts_text: must not be empty",
    }
    response = client.get("/voices/bad name", params={"user_id": "bad id"})
    assert response.status_code == 422 and error_of(response)["message"].startswith("user_id:")


def test_seed_messages_keep_their_hints(client, male_prompt):
    response = client.post("/tts", json={"tts_text": "Hello.", "spk_id": "nobody"})
    assert error_of(response)["message"] == "spk_id: no voice named 'nobody'; GET /get_available_spks lists them"
    assert clone(client, "twice", male_prompt).status_code == 200
    again = clone(client, "twice", male_prompt)
    assert again.status_code == 409 and error_of(again) == {
        "code": "conflict",
        "message": "spk_id: a voice named 'twice' already exists; send overwrite=true to replace it",
    }
    wrong_user = client.post("/generate_audio", json={"mode": "预训练音色", "tts_text": "Hi.", "spk_customize": "x"})
    assert wrong_user.status_code == 400 and error_of(wrong_user) == {
        "code": "missing_field",
        "message": "user_id: needed with spk_customize, prompt_speech_16k or exp_name",
    }
    no_prompt = client.post("/tts/zero_shot", json={"tts_text": "Hi."})
    assert error_of(no_prompt)["message"].endswith("or the spk_id of a cloned voice")


def test_openai_words_the_same_errors_its_own_way(client, male_prompt):
    sample = {"audio_sample": ("p.wav", male_prompt, "audio/wav")}
    assert client.post("/v1/audio/voices", data={"name": "twice"}, files=sample).status_code == 200
    again = openai_error(client.post("/v1/audio/voices", data={"name": "twice"}, files=sample))
    assert again == {
        "message": "name: a voice named 'twice' already exists",
        "type": "invalid_request_error",
        "param": "name",
        "code": "already_exists",
    }
    union = openai_error(client.post(SPEECH, json={"model": "tts-1", "input": "Hi.", "voice": 123}))
    assert union["param"] == "voice" and union["message"].startswith("voice: ") and ".str" not in union["message"]
    broken = client.post(SPEECH, content=b'{"model": "tts-1",', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and openai_error(broken)["param"] is None
    assert openai_error(broken)["message"].startswith("body: not valid JSON (Expecting property name")
    missing = openai_error(client.post(SPEECH, json={"model": "tts-1", "voice": "alloy"}))
    assert (missing["param"], missing["code"]) == ("input", "missing_required_parameter")


def test_the_door_is_chosen_under_a_root_path(settings):
    with TestClient(create_app(settings), root_path="/api") as client:
        response = client.post("/api/v1/audio/speech", json={"model": "tts-1", "voice": "alloy"})
        assert response.status_code == 400 and openai_error(response)["param"] == "input"
        seed = client.post("/api/tts", json={"spk_id": "中文女"})
        assert seed.status_code == 400 and error_of(seed)["message"].startswith("tts_text:")


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (EngineFailure(None, "injected failure"), "injected failure"),
        (RuntimeError("CUDA out of memory"), "the engine failed; the server log has the details"),
    ],
)
def test_a_failure_after_the_first_sse_event_becomes_an_error_event(client, monkeypatch, failure, message):
    engine = client.app.state.speech.engine
    synthesize = engine.synthesize

    def failing(request):
        for chunk in synthesize(request):
            yield chunk
            raise failure

    monkeypatch.setattr(engine, "synthesize", failing)
    body = {"model": "tts-1", "voice": "alloy", "input": "One. Two. Three.", "stream_format": "sse"}
    response = client.post(SPEECH, json=body)
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"speech.audio.delta"' in events[0]
    assert events[-1] == (
        f'data: {{"type": "error", "error": {{"message": "{message}", "type": "server_error", '
        '"param": null, "code": "engine_error"}}'
    )


def test_the_voice_table_may_name_any_string_and_a_voice_of_that_name_wins(settings, male_prompt):
    table = {"My Voice": "英文女", "onyx": "英文女"}
    with TestClient(create_app(settings.model_copy(update={"openai_voices": table}))) as client:
        request = {"model": "tts-1", "input": "Hello there.", "response_format": "pcm"}
        assert client.post(SPEECH, json={**request, "voice": "My Voice"}).status_code == 200
        female = decode_pcm(client.post(SPEECH, json={**request, "voice": "onyx"}).content, 24000).median_f0()
        assert clone(client, "onyx", male_prompt).status_code == 200
        cloned = decode_pcm(client.post(SPEECH, json={**request, "voice": "onyx"}).content, 24000).median_f0()
        assert cloned < 0.8 * female


@pytest.mark.parametrize("path", ["/tts", "/v1/audio/speech"])
def test_an_early_413_is_in_the_doors_shape(client, path):
    limit = client.app.state.settings.max_upload_bytes
    response = client.post(path, content=b"x" * (limit + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413
    if path.startswith("/v1/"):
        assert openai_error(response)["code"] == "payload_too_large"
    else:
        assert error_of(response)["code"] == "payload_too_large"
