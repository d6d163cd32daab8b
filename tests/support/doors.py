"""Each door's POST paths and the shape of its errors, and cloning a voice through the seed door."""

from tests.support.speech import EN_PROMPT

# each door's POST paths
SEED = ["/tts", "/tts/pcm", "/tts/zero_shot", "/tts/cross_lingual", "/tts/instruct", "/generate_audio", "/clone"]
OPENAI = ["/v1/audio/speech"]
DASHSCOPE = ["/api/v1/services/audio/tts/SpeechSynthesizer", "/api/v1/services/audio/tts/customization"]
RUNTIME = ["/inference_sft", "/inference_zero_shot", "/inference_cross_lingual", "/inference_instruct"]


def error_of(response) -> dict:
    """The seed door's error: ``{"error": {"code", "message"}}``."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def openai_error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]


def dashscope_error(response) -> dict:
    body = response.json()
    assert set(body) == {"request_id", "code", "message"} and body["code"] == "InvalidParameter", body
    return body


def runtime_error(response) -> dict:
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return body


def clone(client, spk_id: str, prompt: bytes, text: str = EN_PROMPT, **extra):
    """POST /clone with a WAV prompt and its transcript (``extra``: more form fields)."""
    data = {"spk_id": spk_id, "prompt_text": text, **extra}
    return client.post("/clone", data=data, files={"prompt_audio": ("prompt.wav", prompt, "audio/wav")})
