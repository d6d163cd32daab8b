"""Errors by door: every error (domain, validation, HTTP) is rendered in the shape of the door that was asked.

Each door's ``errors`` module offers ``render(exc, fields) -> Response``; ``fields`` maps core parameter names
to the field names this request used (e.g. the seed's prompt audio sent as ``prompt_audio_base64``).
"""

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.core.errors import Busy, DomainError, Unauthenticated

log = logging.getLogger(__name__)

Render = Callable[[Exception, dict[str, str]], Response]


class DoorError(HTTPException):
    """An error of a door's own protocol (e.g. a media type it does not read), with its HTTP status.

    An HTTPException, because FastAPI turns anything else raised while it reads a body into a 400."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None, headers=None):
        super().__init__(status, message, headers)
        self.status, self.code, self.message, self.param = status, code, message, param


def route_path(scope) -> str:
    """The path the app routes on: without the root path a proxy mounts the app under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def domain_error(exc: DomainError, statuses: dict, fields: dict[str, str], defaults: dict[str, str]):
    """(status, code, the parameter as this request named it or None, the message "<field>: <problem>")."""
    status, code = next(statuses[kind] for kind in type(exc).__mro__ if kind in statuses)
    name = (fields.get(exc.param) or defaults.get(exc.param, exc.param)) if exc.param else None
    return status, code, name, f"{name}: {exc.problem}" if name else exc.problem


def field_names(request: Request) -> dict[str, str]:
    """This request's own names for core parameters; a door's parser adds to it."""
    if not hasattr(request.state, "field_names"):
        request.state.field_names = {}
    return request.state.field_names


def add_headers(exc: Exception, response: Response) -> None:
    """What a 429 and a 401 say besides their body, in every door: when to retry, how to authenticate."""
    if isinstance(exc, Busy):
        response.headers["retry-after"] = str(exc.retry_after)
    elif isinstance(exc, Unauthenticated):
        response.headers["www-authenticate"] = "Bearer"
    elif isinstance(exc, HTTPException) and exc.headers:  # e.g. a 405's Allow
        response.headers.update(exc.headers)


def install_error_handlers(app: FastAPI, doors: list[tuple[str, Render]], default: Render) -> Callable[[str], Render]:
    def door_for(path: str) -> Render:
        return next((render for prefix, render in doors if path.startswith(prefix)), default)

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnect):  # the client left while sending its body: nobody to answer
            return Response(status_code=499)
        response = door_for(route_path(request.scope))(exc, field_names(request))
        add_headers(exc, response)
        if not isinstance(exc, DomainError | DoorError | RequestValidationError | HTTPException):
            log.exception("unhandled error", exc_info=exc)
            # Starlette re-raises it after this answer and uvicorn then drops the connection: say so, or a
            # keep-alive client sends its next request into a closed socket
            response.headers["connection"] = "close"
        return response

    for kind in (DomainError, DoorError, RequestValidationError, HTTPException, ClientDisconnect, Exception):
        app.add_exception_handler(kind, handle)
    return door_for


def validation_problems(exc: RequestValidationError) -> list[tuple[str, str]]:
    """(field, problem) of each validation error, the field as the client named it (a body that is not JSON
    at all: "body")."""
    out = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            out.append(("body", "not valid JSON"))
            continue
        loc = err.get("loc", ())
        loc = loc[1:] if loc and loc[0] in ("body", "query", "path", "form", "header") else loc
        out.append(
            (".".join(str(p) for p in loc) or "body", err.get("msg", "invalid value").removeprefix("Value error, "))
        )
    return out
