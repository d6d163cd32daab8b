"""How every door reads a body: JSON within limits, and forms whose text fields must be UTF-8.

Python's json module answers a 5000-digit integer with a ValueError and 100,000 levels of nesting with a
RecursionError, and Starlette reads form text that is not UTF-8 as Latin-1 (mojibake spoken or stored). The seed's
own body reader and, through ``SafeBodyRoute``, the FastAPI routes of every other door read bodies here.
"""

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.errors import DoorError

# No field of any request nests or counts this far: deeper or longer is a hostile body, refused early.
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 100  # Python refuses over 4300 digits with a ValueError; nothing here needs more than 20
MAX_FORM_FIELDS = 1000


class BodyProblem(ValueError):
    """A body that cannot be read. ``malformed``: its framing is broken (a 400 everywhere), not only its content."""

    def __init__(self, field: str, problem: str, malformed: bool = False):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.malformed = field, problem, malformed


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise BodyProblem("body", f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_json(raw: bytes) -> Any:
    try:
        data = json.loads(raw, parse_int=_bounded_int)
    except RecursionError:  # json's own parser gives up far below anything we would accept
        raise BodyProblem("body", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyProblem("body", f"not valid JSON ({exc})") from None
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BodyProblem("body", f"nested deeper than {MAX_JSON_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return data


async def read_json(raw: bytes) -> Any:
    return await asyncio.to_thread(_parse_json, raw)  # bodies can be megabytes of base64


class _NotText(MultiPartException):
    pass


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, except that a text field that is not valid UTF-8 is refused (whatever charset the
    part declares: our fields are text in UTF-8) instead of being read as Latin-1."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is not None:
            return super().on_part_end()
        try:
            self.items.append((part.field_name, part.data.decode("utf-8")))
        except UnicodeDecodeError:
            raise _NotText(part.field_name) from None


def _urlencoded(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")  # percent-encoded, or UTF-8 as curl -d sends it
        return parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except UnicodeDecodeError:
        raise BodyProblem("body", "not valid UTF-8 text (a form's fields, percent-decoded)") from None
    except ValueError as exc:  # too many fields
        raise BodyProblem("body", str(exc), malformed=True) from None


async def read_form(request: Request, max_part_size: int) -> FormData:
    """A multipart or urlencoded form; ``max_part_size`` bounds each text field (files are bounded elsewhere)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return FormData(_urlencoded(await request.body()))
    if content_type != "multipart/form-data":
        return FormData()  # not a form: no fields (each route says which it misses)
    parser = _StrictMultiPartParser(
        request.headers, request.stream(), max_fields=MAX_FORM_FIELDS, max_part_size=max_part_size
    )
    try:
        return await parser.parse()
    except _NotText as exc:
        raise BodyProblem(exc.message, "not valid UTF-8 text") from None
    except MultiPartException as exc:
        raise BodyProblem("body", exc.message, malformed=True) from None


class _SafeBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = await read_json(await self.body())
            except BodyProblem as exc:
                raise _door_error(exc) from None
        return self._json

    async def _get_form(self, *, max_part_size: int = 1024 * 1024, **_limits) -> FormData:
        if self._form is None:
            try:
                self._form = await read_form(self, max(max_part_size, self.app.state.settings.max_upload_bytes))
            except BodyProblem as exc:
                raise _door_error(exc) from None
        return self._form


def _door_error(exc: BodyProblem) -> DoorError:
    param = None if exc.field == "body" else exc.field
    return DoorError(400, "invalid_body" if exc.malformed else "invalid_value", str(exc), param)


class SafeBodyRoute(APIRoute):
    """A FastAPI route whose JSON and form bodies are read by this module (``APIRouter(route_class=...)``)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def safe_body_handler(request: Request):
            return await handler(_SafeBodyRequest(request.scope, request.receive))

        return safe_body_handler
