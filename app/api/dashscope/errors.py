"""The DashScope door's error shape: a non-200 status with ``{"request_id", "code", "message"}``, what the SDK reads
into its exceptions (VoiceEnrollmentException) and results (status_code, code, message)."""

import uuid

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from app.api.dashscope.requests import FIELDS, STATUS
from app.api.errors import DoorError, domain_error, validation_problems
from app.core import errors

PREFIX = "/api/v1/services/"


class DashScopeError(BaseModel):
    request_id: str
    code: str
    message: str


ERRORS = {
    "4XX": {"model": DashScopeError, "description": "a bad request: the message names the field (input.voice, ...)"},
    "5XX": {"model": DashScopeError, "description": "the engine or the storage failed"},
}
_HTTP_CODES = {404: "NotFound", 405: "MethodNotAllowed", 408: "RequestTimeOut", 503: "Throttling"}


def error_body(code: str, message: str, request_id: str | None = None) -> dict:
    return {"request_id": request_id or str(uuid.uuid4()), "code": code, "message": message}


def render(exc: Exception, fields: dict[str, str]) -> JSONResponse:
    headers = None
    if isinstance(exc, errors.DomainError):
        status, code, _, message = domain_error(exc, STATUS, fields, FIELDS)
    elif isinstance(exc, DoorError):
        status, message = exc.status, exc.message
        code = "InvalidParameter" if status < 500 else "InternalError"
    elif isinstance(exc, RequestValidationError):
        status, code = 400, "InvalidParameter"
        message = "; ".join(f"{field}: {problem}" for field, problem in validation_problems(exc))
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, str(exc.detail), exc.headers
        code = _HTTP_CODES.get(status, "InvalidParameter" if status < 500 else "InternalError")
    else:
        status, code, message = 500, "InternalError", "internal error; the server log has the details"
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)
