"""The OpenAPI schema documents every request body (file fields included), and what it documents is accepted."""

import pytest

from tests.support.audio import decode
from tests.support.speech import EN_PROMPT

SEED_MEDIA_TYPES = {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"}


@pytest.fixture
def spec(client) -> dict:
    return client.get("/openapi.json").json()


def _is_file(field: dict) -> bool:
    """A file field as OpenAPI 3.1 writes it (Swagger UI shows a file picker for either form)."""
    return field.get("format") == "binary" or field.get("contentMediaType") == "application/octet-stream"


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_post_documents_its_body(spec):
    posts = [(path, op) for path, method, op in _operations(spec) if method == "post"]
    assert len(posts) >= 9
    for path, operation in posts:
        content = operation.get("requestBody", {}).get("content", {})
        assert content, f"POST {path} documents no request body"
        for media_type, body in content.items():
            schema = body["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            assert schema.get("properties"), f"POST {path} {media_type}: no fields"


@pytest.mark.parametrize(
    ("path", "required", "files"),
    [
        ("/tts", {"tts_text", "spk_id"}, set()),
        ("/tts/pcm", {"tts_text", "spk_id"}, set()),
        ("/tts/zero_shot", {"tts_text"}, {"prompt_audio"}),
        ("/tts/cross_lingual", {"tts_text"}, {"prompt_audio"}),
        ("/tts/instruct", {"tts_text", "instruct_text"}, {"prompt_audio"}),
        ("/generate_audio", {"tts_text", "mode"}, {"prompt_audio"}),
        ("/clone", {"spk_id", "prompt_text"}, {"prompt_audio"}),
    ],
)
def test_seed_bodies_in_all_three_media_types(spec, path, required, files):
    content = spec["paths"][path]["post"]["requestBody"]["content"]
    assert set(content) == SEED_MEDIA_TYPES
    form = content["multipart/form-data"]["schema"]
    assert set(form["required"]) == required
    binary = {name for name, field in form["properties"].items() if _is_file(field)}
    assert binary == files
    assert not any(
        field.get("format") == "binary" for field in content["application/json"]["schema"]["properties"].values()
    )


def test_generate_audio_documents_the_four_mode_names(spec):
    schema = spec["paths"]["/generate_audio"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["mode"]["enum"][:4] == ["预训练音色", "3s极速复刻", "跨语种复刻", "自然语言控制"]


def test_openai_voice_upload_is_a_documented_multipart_form(spec):
    content = spec["paths"]["/v1/audio/voices"]["post"]["requestBody"]["content"]
    ref = content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    form = spec["components"]["schemas"][ref]
    assert set(form["required"]) == {"name", "audio_sample"}
    assert _is_file(form["properties"]["audio_sample"])


def test_audio_responses_name_their_media_types(spec):
    assert "audio/mpeg" in spec["paths"]["/tts"]["post"]["responses"]["200"]["content"]
    speech = spec["paths"]["/v1/audio/speech"]["post"]["responses"]
    assert {"audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm", "text/event-stream"} <= set(
        speech["200"]["content"]
    )
    assert "ErrorResponse" in speech["4XX"]["content"]["application/json"]["schema"]["$ref"]
    for path, method, operation in _operations(spec):
        assert "422" not in operation["responses"], f"{method.upper()} {path} documents FastAPI's 422 shape"
        if path not in ("/health", "/ready"):  # probes answer their own shape
            error = "ErrorResponse" if path.startswith("/v1/") else "SeedError"
            error = "RuntimeApiError" if path.startswith("/inference_") else error
            error = "DashScopeError" if path.startswith("/api/v1/") else error
            assert error in operation["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"], path


def test_a_request_built_from_the_documented_form_is_served(client, spec, male_prompt):
    """What Swagger UI sends for the documented multipart form: every documented field, files as files."""
    form = spec["paths"]["/tts/zero_shot"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    values = {"tts_text": "Hello from the form.", "prompt_text": EN_PROMPT, "speed": "1", "seed": "0", "stream": "true"}
    assert set(values) <= set(form["properties"])
    response = client.post("/tts/zero_shot", data=values, files={"prompt_audio": ("p.wav", male_prompt, "audio/wav")})
    assert response.status_code == 200 and decode(response.content).seconds > 0.5
