"""The OpenAI door's error shape: ``{"error": {"message", "type", "param", "code"}}``, with OpenAI's statuses."""

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.api.errors import DoorError, validation_problems
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
}

STATUS = {
    errors.Missing: (400, "missing_required_parameter"),
    errors.Invalid: (400, "invalid_value"),
    errors.Unsupported: (400, "unsupported_value"),
    errors.NotFound: (404, "not_found"),
    errors.AlreadyExists: (409, "already_exists"),
    errors.Forbidden: (403, "forbidden"),
    errors.TooLarge: (413, "payload_too_large"),
    errors.Busy: (503, "server_busy"),
    errors.EngineFailure: (500, "engine_error"),
    errors.VoiceTableUnavailable: (503, "voice_table_unavailable"),
    errors.StorageFailure: (502, "storage_error"),
    errors.StorageUnavailable: (503, "storage_unavailable"),
    errors.ClientGone: (499, "client_closed_request"),
}


def error_body(status: int, message: str, param: str | None, code: str | None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def render(exc: Exception, fields: dict[str, str]) -> JSONResponse:
    headers, param = None, None
    if isinstance(exc, errors.DomainError):
        status, code = next(STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS)
        param = fields.get(exc.param) or FIELDS.get(exc.param, exc.param)
        message = f"{param}: {exc.problem}" if param else exc.problem
    elif isinstance(exc, DoorError):
        status, code, message, param = exc.status, exc.code, exc.message, exc.param
    elif isinstance(exc, RequestValidationError):
        problems = validation_problems(exc)
        status, param = 400, problems[0][0]
        code = "missing_required_parameter" if exc.errors()[0].get("type") == "missing" else "invalid_value"
        message = "; ".join(f"{field}: {problem}" for field, problem in problems)
    elif isinstance(exc, HTTPException):
        status, code, message, headers = exc.status_code, "http_error", str(exc.detail), exc.headers
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, code)
    else:
        status, code, message = 500, "internal_error", "internal error; the server log has the details"
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)
