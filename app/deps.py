"""Request plumbing shared by the routes: the service dependency and one body parser."""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.errors import InvalidInput, MissingField, ServiceError, describe_validation_errors
from app.services.speech import SpeechService, Upload, decode_base64_audio

Model = TypeVar("Model", bound=BaseModel)


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


def get_speech(request: Request) -> SpeechService:
    return request.app.state.speech


Speech = Annotated[SpeechService, Depends(get_speech)]


@dataclass
class RequestBody:
    fields: dict
    files: dict[str, Upload] = field(default_factory=dict)

    def parse(self, model: type[Model]) -> Model:
        for name in model.model_fields:
            if name in self.files and name not in self.fields:
                raise InvalidInput(f"{name}: sent as a file; expected a text field")
        try:
            return model.model_validate(self.fields)
        except ValidationError as exc:
            errors = exc.errors()
            kind = MissingField if all(e["type"] == "missing" for e in errors) else InvalidInput
            raise kind(describe_validation_errors(errors)) from None

    async def audio(self, file_field: str, base64_field: str = "prompt_audio_base64") -> Upload | None:
        """Prompt audio from a file part or a base64 field, whichever the client sent."""
        if file_field in self.files:
            return self.files[file_field]
        if file_field in self.fields:
            raise InvalidInput(f"{file_field}: sent as text; send a file part, or base64 in {base64_field}")
        value = self.fields.get(base64_field)
        if isinstance(value, str) and value.strip():
            return await asyncio.to_thread(decode_base64_audio, base64_field, value)
        return None


def _check_text(name: str, value) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{name}: contains an invalid character (an unpaired surrogate)") from None


async def read_body(request: Request) -> RequestBody:
    """JSON object, multipart form or urlencoded form: the same fields whichever a client sends."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = RequestBody(await _json_object(await request.body()))
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        body = await _form(request)
    elif not await request.body():
        body = RequestBody({})
    else:
        raise UnsupportedMediaType(
            f"body: Content-Type {content_type!r} is not accepted; send application/json, "
            "multipart/form-data or application/x-www-form-urlencoded"
        )
    for name, value in body.fields.items():
        _check_text(name, value)
    return body


async def _json_object(raw: bytes) -> dict:
    try:
        data = await asyncio.to_thread(json.loads, raw or b"{}")  # bodies can be megabytes of base64
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"body: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInput("body: expected a JSON object")
    return data


async def _form(request: Request) -> RequestBody:
    limit = request.app.state.settings.max_upload_bytes
    body = RequestBody({})
    async with request.form(max_part_size=limit) as form:
        for name, value in form.multi_items():
            if name in body.fields or name in body.files:
                raise InvalidInput(f"{name}: sent more than once")
            if isinstance(value, UploadFile):
                body.files[name] = Upload(name, await value.read(), value.filename or "")
            else:
                body.fields[name] = value
    return body


Body = Annotated[RequestBody, Depends(read_body)]
