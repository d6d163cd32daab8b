"""The seed door's one body reader: JSON object, multipart form or urlencoded form, the same fields in each.

The seed's clients send all three to the same endpoints, which FastAPI's body parameters cannot express; the
models are still Pydantic's, and ``documented`` puts them in the OpenAPI schema for every media type.
"""

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Annotated, TypeVar
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.errors import DoorError, field_names, validation_problems
from app.core.errors import Invalid
from app.core.voice_store import Upload

Model = TypeVar("Model", bound=BaseModel)


def _invalid(name: str, problem: str) -> DoorError:
    return DoorError(422, "invalid_input", f"{name}: {problem}")


@dataclass
class RequestBody:
    request: Request
    fields: dict
    files: dict[str, Upload] = field(default_factory=dict)

    def parse(self, model: type[Model]) -> Model:
        for name in model.model_fields:
            if name in self.files and name not in self.fields:
                raise _invalid(name, "sent as a file; expected a text field")
        try:
            return model.model_validate(self.fields)
        except ValidationError as exc:
            problems = "; ".join(f"{name}: {problem}" for name, problem in validation_problems(exc))
            if all(e["type"] == "missing" for e in exc.errors()):
                raise DoorError(400, "missing_field", problems) from None
            raise DoorError(422, "invalid_input", problems) from None

    async def audio(self, file_field: str, base64_field: str = "prompt_audio_base64") -> Upload | None:
        """Prompt audio from a file part or a base64 field, whichever the client sent."""
        names = field_names(self.request)
        if file_field in self.files:
            names["prompt_audio"] = file_field
            return self.files[file_field]
        if file_field in self.fields:
            raise _invalid(file_field, f"sent as text; send a file part, or base64 in {base64_field}")
        value = self.fields.get(base64_field)
        if isinstance(value, str) and value.strip():
            names["prompt_audio"] = base64_field
            return await asyncio.to_thread(decode_base64_audio, value)
        return None


def decode_base64_audio(value: str) -> Upload:
    payload = value.strip()
    if payload.startswith("data:") and "," in payload:  # a data: URL from a browser
        payload = payload.split(",", 1)[1]
    try:
        # a form-urlencoded "+" arrives as a space; base64 never contains spaces
        return Upload(base64.b64decode("".join(payload.replace(" ", "+").split()), validate=True))
    except (binascii.Error, ValueError):
        raise Invalid("prompt_audio", "not valid base64") from None


def _check_text(name: str, value) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(name, "contains an invalid character (an unpaired surrogate)") from None


async def read_body(request: Request) -> RequestBody:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = RequestBody(request, await _json_object(await request.body()))
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        body = await _form(request)
    elif not await request.body():
        body = RequestBody(request, {})
    else:
        raise DoorError(
            415,
            "unsupported_media_type",
            f"body: Content-Type {content_type!r} is not accepted; send application/json, "
            "multipart/form-data or application/x-www-form-urlencoded",
        )
    for name, value in body.fields.items():
        _check_text(name, value)
    return body


# No field of any request nests or counts this far: deeper or longer is a hostile body, refused early.
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 100  # Python refuses over 4300 digits with a ValueError; nothing here needs more than 20


class _TooBig(ValueError):
    pass


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise _TooBig(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_json(raw: bytes):
    data = json.loads(raw, parse_int=_bounded_int)
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_JSON_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return data


async def _json_object(raw: bytes) -> dict:
    try:
        data = await asyncio.to_thread(_parse_json, raw or b"{}")  # bodies can be megabytes of base64
    except _TooBig as exc:
        raise _invalid("body", str(exc)) from None
    except RecursionError:  # json's own parser gives up far below anything we would accept
        raise _invalid("body", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid("body", f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _invalid("body", "expected a JSON object")
    return data


class _NotText(MultiPartException):
    pass


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, except that a text field that is not valid UTF-8 is refused instead of being read
    as Latin-1 (Starlette's fallback), which would speak or store mojibake."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is not None:
            return super().on_part_end()
        try:  # UTF-8 whatever charset the part declares: the seed's fields are text in UTF-8
            self.items.append((part.field_name, part.data.decode("utf-8")))
        except UnicodeDecodeError:
            raise _NotText(f"{part.field_name}: not valid UTF-8 text") from None


async def _form(request: Request) -> RequestBody:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        limit = request.app.state.settings.max_upload_bytes
        parser = _StrictMultiPartParser(request.headers, request.stream(), max_part_size=limit)
        try:
            form = await parser.parse()
        except _NotText as exc:
            raise DoorError(422, "invalid_input", exc.message) from None
        except MultiPartException as exc:
            raise DoorError(400, "bad_request", f"body: {exc.message}") from None
        items = form.multi_items()
    else:
        items = _urlencoded(await request.body())
        form = None
    body = RequestBody(request, {})
    try:
        for name, value in items:
            if name in body.fields or name in body.files:
                raise _invalid(name, "sent more than once")
            if isinstance(value, UploadFile):
                body.files[name] = Upload(await value.read(), value.filename or "")
            else:
                body.fields[name] = value
    finally:
        if form is not None:
            await form.close()
    return body


def _urlencoded(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")  # percent-encoded, or UTF-8 as curl -d sends it
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=1000)
    except UnicodeDecodeError:
        raise _invalid("body", "not valid UTF-8 text (a form's fields, percent-decoded)") from None
    except ValueError as exc:  # too many fields
        raise DoorError(400, "bad_request", f"body: {exc}") from None


Body = Annotated[RequestBody, Depends(read_body)]


def missing(name: str, problem: str) -> DoorError:
    """A field the seed requires here (the seed's clients expect 400 for these)."""
    return DoorError(400, "missing_field", f"{name}: {problem}")
