"""Errors by door: every error (domain, validation, HTTP) is rendered in the shape of the door that was asked.

Each door's ``errors`` module offers ``render(exc, fields) -> Response``; ``fields`` maps core parameter names
to the field names this request used (e.g. the seed's prompt audio sent as ``prompt_audio_base64``).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

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


def domain_error_kinds() -> list[type[DomainError]]:
    """Every kind of core error (each subclass of DomainError, however deep)."""
    kinds, todo = [], [DomainError]
    while todo:
        for kind in todo.pop().__subclasses__():
            kinds.append(kind)
            todo.append(kind)
    return kinds


@dataclass(frozen=True)
class Answer:
    """What a door says about an error: its status, its code, the message, and the field as the request named it."""

    status: int
    code: str
    message: str
    param: str | None = None


class DoorErrors:
    """One door's description of its errors, read by the one dispatch (``answer``): the status and code of every
    kind of core error, its names for the core's parameters, and its words for its protocol's own failures.

    Built when the door's module is imported: a kind of core error the door does not describe stops the server
    from starting, so no error can fall through to a bare 500. A door with wording of its own overrides a method.
    """

    def __init__(
        self,
        statuses: dict[type[DomainError], tuple[int, str]],
        fields: dict[str, str],
        invalid: tuple[int, str],
        http_codes: dict[int, str] | None = None,
        internal: str = "internal_error",
    ):
        missing = sorted(kind.__name__ for kind in domain_error_kinds() if kind not in statuses)
        if missing:
            raise TypeError(f"the door's error table has no answer for {', '.join(missing)}")
        self.statuses, self.fields, self.invalid = statuses, fields, invalid
        self.http_codes, self.internal_code = http_codes or {}, internal

    def domain(self, exc: DomainError, fields: dict[str, str]) -> Answer:
        """``fields``: this request's own names for core parameters, before the door's usual ones."""
        known = next((self.statuses[kind] for kind in type(exc).__mro__ if kind in self.statuses), None)
        if known is None:  # a kind made after the door was built
            log.error("no answer for %s: %s", type(exc).__name__, exc)
            return self.internal()
        status, code = known
        name = (fields.get(exc.param) or self.fields.get(exc.param, exc.param)) if exc.param else None
        return Answer(status, code, f"{name}: {exc.problem}" if name else exc.problem, name)

    def door(self, exc: DoorError) -> Answer:
        return Answer(exc.status, exc.code, exc.message, exc.param)

    def validation(self, exc: RequestValidationError) -> Answer:
        message = "; ".join(f"{field}: {problem}" for field, problem in validation_problems(exc))
        return Answer(*self.invalid, message)

    def http(self, exc: HTTPException) -> Answer:
        return Answer(exc.status_code, self.http_code(exc.status_code), str(exc.detail))

    def http_code(self, status: int) -> str:
        return self.http_codes.get(status, "http_error")

    def internal(self) -> Answer:
        return Answer(500, self.internal_code, "internal error; the server log has the details")


def answer(exc: Exception, door: DoorErrors, fields: dict[str, str] | None = None) -> Answer:
    """The one dispatch: any exception, answered as ``door`` describes it (anything unknown is a bug: a 500)."""
    if isinstance(exc, DomainError):
        return door.domain(exc, fields or {})
    if isinstance(exc, DoorError):
        return door.door(exc)
    if isinstance(exc, RequestValidationError):
        return door.validation(exc)
    if isinstance(exc, HTTPException):
        return door.http(exc)
    return door.internal()


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
