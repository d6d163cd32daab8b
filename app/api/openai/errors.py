"""The OpenAI door's error shape: ``{"error": {"message", "type", "param", "code"}}``, with OpenAI's statuses."""

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api.errors import Answer, DoorErrors, answer, validation_problems
from app.core import errors

# core parameter -> OpenAI's field name
FIELDS = {
    "text": "input",
    "voice": "voice",
    "name": "name",
    "instruction": "instructions",
    "format": "response_format",
    "prompt_audio": "audio_sample",
    "prompt_text": "script_hint",
    "mode": "instructions",  # the only way to ask this door for another mode
}


def _top_field(error: dict) -> str | None:
    """The request field an error is about: its first name (a union's member tags and list indexes dropped)."""
    if error.get("type") == "json_invalid":
        return None
    loc = error.get("loc", ())
    return str(loc[1]) if len(loc) > 1 and loc[0] in ("body", "query", "path", "form", "header") else None


STATUS = {
    errors.Missing: (400, "missing_required_parameter"),
    errors.Invalid: (400, "invalid_value"),
    errors.Unsupported: (400, "unsupported_value"),
    errors.NotFound: (404, "not_found"),
    errors.AlreadyExists: (409, "already_exists"),
    errors.Forbidden: (403, "forbidden"),
    errors.TooLarge: (413, "payload_too_large"),
    errors.Unauthenticated: (401, "invalid_api_key"),
    errors.Busy: (429, "server_busy"),
    errors.EngineFailure: (500, "engine_error"),
    errors.VoiceTableUnavailable: (503, "voice_table_unavailable"),
    errors.StorageFailure: (502, "storage_error"),
    errors.StorageUnavailable: (503, "storage_unavailable"),
    errors.ClientGone: (499, "client_closed_request"),
}


def error_body(status: int, message: str, param: str | None, code: str | None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _OpenAIErrors(DoorErrors):
    def validation(self, exc: RequestValidationError) -> Answer:
        named = [_top_field(error) for error in exc.errors()] or [None]
        problems = [(f or "body", p) for f, (_, p) in zip(named, validation_problems(exc), strict=False)]
        missing = [e.get("type") for e in exc.errors()[:1]] == ["missing"]
        code = "missing_required_parameter" if missing else "invalid_value"
        return Answer(400, code, "; ".join(f"{field}: {problem}" for field, problem in problems), named[0])


DOOR = _OpenAIErrors(
    STATUS, FIELDS, invalid=(400, "invalid_value"), http_codes={404: "not_found", 405: "method_not_allowed"}
)


def error_object(exc: errors.DomainError) -> dict:
    """The ``error`` object for a failure after the response began (an SSE ``error`` event)."""
    said = DOOR.domain(exc, {})
    return error_body(said.status, said.message, said.param, said.code)["error"]


def render(exc: Exception, fields: dict[str, str]) -> JSONResponse:
    said = answer(exc, DOOR, fields)
    return JSONResponse(error_body(said.status, said.message, said.param, said.code), status_code=said.status)
