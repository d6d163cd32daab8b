from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services.engines.base import Mode, SynthesisRequest
from app.services.engines.espeak import EspeakEngine
from tests.audio_utils import wav
from tests.server import live_server  # noqa: F401 - used by the tests through conftest

ENGINE_RATE = 24000
EN_PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
ZH_PROMPT = "今天天气很好，我们一起去公园散步，然后回家吃饭。"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", engine="auto")


@contextmanager
def running(settings: Settings):
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(settings):
    with running(settings) as client:
        yield client


@pytest.fixture(scope="session")
def engine() -> EspeakEngine:
    return EspeakEngine()


def spoken(engine: EspeakEngine, text: str, speaker: str = "英文男", speed: float = 1.0) -> np.ndarray:
    request = SynthesisRequest(Mode.SFT, text, speaker=speaker, speed=speed)
    return np.concatenate(list(engine.synthesize(request)))


@pytest.fixture(scope="session")
def male_prompt(engine) -> bytes:
    """About 5 s of real speech as a WAV file: a low male voice reading EN_PROMPT."""
    return wav(spoken(engine, EN_PROMPT, "英文男"), ENGINE_RATE)


@pytest.fixture(scope="session")
def female_prompt(engine) -> bytes:
    return wav(spoken(engine, EN_PROMPT, "英文女"), ENGINE_RATE)


@pytest.fixture(scope="session")
def chinese_prompt(engine) -> bytes:
    return wav(spoken(engine, ZH_PROMPT, "中文女"), ENGINE_RATE)


def clone(client, spk_id: str, prompt: bytes, text: str = EN_PROMPT, **extra):
    data = {"spk_id": spk_id, "prompt_text": text, **extra}
    return client.post("/clone", data=data, files={"prompt_audio": ("prompt.wav", prompt, "audio/wav")})


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]
