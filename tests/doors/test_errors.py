"""Every kind of core error, raised inside a real request on every door, is answered in that door's shape with the
status and code its table gives; no kind can fall through to a bare 500."""

import json

import grpc
import pytest
from fastapi.testclient import TestClient

from app.api.dashscope.errors import DOOR as DASHSCOPE
from app.api.errors import DoorErrors, answer, domain_error_kinds
from app.api.openai.errors import DOOR as OPENAI
from app.api.runtime.calls import GRPC_ERRORS, HTTP_ERRORS
from app.api.seed.errors import DOOR as SEED
from app.api.wyoming.session import _error as wyoming_error
from app.core import errors
from app.core.speech import SpeechService
from app.main import create_app

KINDS = domain_error_kinds()
SERVER_SIDE = {errors.EngineFailure, errors.StorageFailure, errors.StorageUnavailable, errors.VoiceTableUnavailable}
# Wyoming's codes are the kind's name in snake case; a few spelled out, so that a change of rule shows
WYOMING_CODES = {errors.NotFound: "not_found", errors.Busy: "busy", errors.StorageUnavailable: "storage_unavailable"}
TABLES = {"seed": SEED, "openai": OPENAI, "dashscope": DASHSCOPE, "runtime": HTTP_ERRORS, "grpc": GRPC_ERRORS}


def _raise(kind):
    exc = kind("voice", "made to fail") if kind is not errors.Busy else kind("voice", "made to fail", retry_after=3)

    async def prepare(self, request, with_text=True):
        raise exc

    return prepare


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    from app.config import Settings

    folder = tmp_path_factory.mktemp("errors")
    settings = Settings(data_dir=folder / "data", model_dir=folder / "no-model", engine="auto")
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_core_has_the_kinds_every_door_answers():
    assert {kind.__name__ for kind in KINDS} >= {"Missing", "Invalid", "NotFound", "Busy", "StorageUnavailable"}
    for name, door in TABLES.items():
        for kind in KINDS:
            status, code = door.statuses[kind]
            assert code, (name, kind)
            if kind in SERVER_SIDE:
                assert status >= 500, (name, kind)
            elif kind is errors.ClientGone:
                assert status == 499, name
            else:
                assert 400 <= status < 500, (name, kind)
        assert door.statuses[errors.Busy][0] == 429, name


def test_a_table_without_an_answer_for_a_kind_stops_the_door_being_built():
    partial = {kind: (400, "x") for kind in KINDS if kind is not errors.TooLarge}
    with pytest.raises(TypeError, match="TooLarge"):
        DoorErrors(partial, {}, invalid=(400, "x"))


def test_a_kind_made_after_the_doors_is_answered_in_the_door_s_shape(app_client, monkeypatch, caplog):
    class Surprise(errors.DomainError):
        pass

    monkeypatch.setattr(SpeechService, "prepare", _raise(Surprise))
    response = app_client.post("/tts", json={"tts_text": "Hello.", "spk_id": "英文女"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal error; the server log has the details"}
    }
    assert "no answer for Surprise" in caplog.text
    assert answer(Surprise(None, "x"), OPENAI).status == 500


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_every_http_door_answers_every_kind(app_client, monkeypatch, kind):
    monkeypatch.setattr(SpeechService, "prepare", _raise(kind))
    seed = app_client.post("/tts", json={"tts_text": "Hello.", "spk_id": "英文女"})
    status, code = SEED.statuses[kind]
    assert seed.status_code == status and seed.json()["error"]["code"] == code
    assert seed.json()["error"]["message"].startswith("spk_id: made to fail")

    openai = app_client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "alloy"})
    status, code = OPENAI.statuses[kind]
    assert openai.status_code == status
    assert openai.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": "voice",
        "code": code,
    }

    body = {"model": "cosyvoice-v2", "input": {"text": "Hello.", "voice": "longxiaochun"}}
    dashscope = app_client.post("/api/v1/services/audio/tts/SpeechSynthesizer", json=body)
    status, code = DASHSCOPE.statuses[kind]
    assert dashscope.status_code == status
    assert set(dashscope.json()) == {"request_id", "code", "message"} and dashscope.json()["code"] == code

    runtime = app_client.post("/inference_sft", data={"tts_text": "Hello.", "spk_id": "英文女"})
    assert runtime.status_code == HTTP_ERRORS.statuses[kind][0]
    assert runtime.json() == {"detail": "spk_id: made to fail"}
    for response in (seed, openai, dashscope, runtime):
        assert ("retry-after" in response.headers) == (kind is errors.Busy)
        assert (response.headers.get("www-authenticate") == "Bearer") == (kind is errors.Unauthenticated)
    if kind is errors.Busy:
        assert {response.headers["retry-after"] for response in (seed, openai, dashscope, runtime)} == {"3"}


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_the_dashscope_websocket_fails_the_task_with_every_kind(app_client, monkeypatch, kind):
    monkeypatch.setattr(SpeechService, "prepare", _raise(kind))
    header = {"action": "run-task", "task_id": "t1", "streaming": "duplex"}
    payload = {"task_group": "audio", "task": "tts", "function": "SpeechSynthesizer", "model": "cosyvoice-v2"}
    payload |= {"parameters": {"voice": "longxiaochun", "format": "mp3"}, "input": {}}
    with app_client.websocket_connect("/api-ws/v1/inference") as ws:
        ws.send_text(json.dumps({"header": header, "payload": payload}))
        event = json.loads(ws.receive_text())
    assert event["header"]["event"] == "task-failed"
    assert event["header"]["error_code"] == DASHSCOPE.statuses[kind][1]
    assert event["header"]["error_message"] == "voice: made to fail"


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_grpc_and_wyoming_name_every_kind(kind):
    said = GRPC_ERRORS.domain(kind("text", "made to fail"), {})
    assert isinstance(getattr(grpc.StatusCode, said.code), grpc.StatusCode)
    assert said.message == "tts_text: made to fail"
    event = wyoming_error(kind("text", "made to fail"))
    assert event.type == "error" and event.data["text"] == "text: made to fail"
    assert event.data["code"] == WYOMING_CODES.get(kind, event.data["code"])
