"""The seed door's error shape: ``{"error": {"code": ..., "message": "<field>: <problem>"}}``."""

import dataclasses

from fastapi.responses import JSONResponse

from app.api.errors import Answer, DoorErrors, answer
from app.core import errors

# core parameter -> the seed's field name (a request may override these, see app.api.errors.field_names)
FIELDS = {
    "text": "tts_text",
    "voice": "spk_id",
    "name": "spk_id",
    "user": "user_id",
    "instruction": "instruct_text",
    "prompt_key": "prompt_speech_16k",
    "save_as": "exp_name",
}

STATUS = {
    errors.Missing: (400, "missing_field"),
    errors.Invalid: (422, "invalid_input"),
    errors.NotFound: (404, "not_found"),
    errors.AlreadyExists: (409, "conflict"),
    errors.Forbidden: (403, "forbidden"),
    errors.TooLarge: (413, "payload_too_large"),
    errors.Unsupported: (400, "unsupported"),
    errors.Unauthenticated: (401, "unauthorized"),
    errors.Busy: (429, "busy"),
    errors.EngineFailure: (500, "engine_error"),
    errors.VoiceTableUnavailable: (503, "voice_table_unavailable"),
    errors.StorageFailure: (502, "storage_error"),
    errors.StorageUnavailable: (503, "storage_unavailable"),
    errors.ClientGone: (499, "client_closed_request"),
}

# the seed's own wording of a few problems, as its clients have always read them
_PROBLEMS = {(errors.Missing, "user"): "needed with spk_customize, prompt_speech_16k or exp_name"}
_WORDS = (("the name of a cloned voice", "the spk_id of a cloned voice"),)
# what the seed's messages add for its clients, after the field's problem (not for a user's own voices)
_HINTS = {
    (errors.NotFound, "spk_id"): "; GET /get_available_spks lists them",
    (errors.Missing, "spk_id"): "; GET /get_available_spks lists the speakers",
    (errors.AlreadyExists, "spk_id"): "; send overwrite=true to replace it",
}

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _reworded(exc: errors.DomainError) -> errors.DomainError:
    problem = _PROBLEMS.get((type(exc), exc.param), exc.problem)
    for old, new in _WORDS:
        problem = problem.replace(old, new)
    return exc if problem == exc.problem else type(exc)(exc.param, problem)


class _SeedErrors(DoorErrors):
    def domain(self, exc: errors.DomainError, fields: dict[str, str]) -> Answer:
        exc = _reworded(exc)
        said = super().domain(exc, fields)
        if isinstance(exc, errors.NotFound) and exc.problem.startswith("user "):  # the list is not theirs
            return said
        return dataclasses.replace(said, message=said.message + _HINTS.get((type(exc), said.param), ""))


DOOR = _SeedErrors(STATUS, FIELDS, invalid=(422, "invalid_input"), http_codes=_HTTP_CODES)


def render(exc: Exception, fields: dict[str, str]) -> JSONResponse:
    said = answer(exc, DOOR, fields)
    return JSONResponse(error_body(said.code, said.message), status_code=said.status)
