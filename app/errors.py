"""One error family, one JSON shape: ``{"error": {"code": ..., "message": ...}}``."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MissingField(ServiceError):
    """A required field is absent or empty (the seed's clients expect 400 for these)."""

    status = 400
    code = "missing_field"


class InvalidInput(ServiceError):
    status = 422
    code = "invalid_input"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class Busy(ServiceError):
    status = 503
    code = "busy"


class Unsupported(ServiceError):
    status = 400
    code = "unsupported"


class EngineFailure(ServiceError):
    """The speech engine failed on the server's side (the log has the cause's traceback)."""

    status = 500
    code = "engine_error"


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form", "header")]
    return ".".join(parts) or "body"


def describe_validation_errors(errors: list[dict]) -> str:
    messages = []
    for err in errors:
        msg = err.get("msg", "invalid value")
        msg = msg.removeprefix("Value error, ")
        messages.append(f"{_field_name(tuple(err.get('loc', ())))}: {msg}")
    return "; ".join(messages)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("invalid_input", describe_validation_errors(list(exc.errors()))),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "internal error; the server log has the details"),
            status_code=500,
        )
