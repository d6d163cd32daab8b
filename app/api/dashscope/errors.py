"""The DashScope door's error shape: a non-200 status with ``{"request_id", "code", "message"}``, what the SDK reads
into its exceptions (VoiceEnrollmentException) and results (status_code, code, message)."""

import uuid

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.dashscope.requests import FIELDS, STATUS
from app.api.errors import Answer, DoorError, DoorErrors, answer

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


class _DashScopeErrors(DoorErrors):
    def door(self, exc: DoorError) -> Answer:
        return Answer(exc.status, "InvalidParameter" if exc.status < 500 else "InternalError", exc.message)

    def http_code(self, status: int) -> str:
        return _HTTP_CODES.get(status, "InvalidParameter" if status < 500 else "InternalError")


DOOR = _DashScopeErrors(STATUS, FIELDS, invalid=(400, "InvalidParameter"), internal="InternalError")


def render(exc: Exception, fields: dict[str, str]) -> JSONResponse:
    said = answer(exc, DOOR, fields)
    return JSONResponse(error_body(said.code, said.message), status_code=said.status)
