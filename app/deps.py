"""Request plumbing shared by the routes: the service dependency and one body parser."""

import json
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.errors import InvalidInput, ServiceError, describe_validation_errors
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
        try:
            return model.model_validate(self.fields)
        except ValidationError as exc:
            raise InvalidInput(describe_validation_errors(exc.errors())) from None

    def audio(self, file_field: str, base64_field: str = "prompt_audio_base64") -> Upload | None:
        """Prompt audio from a file part or a base64 field, whichever the client sent."""
        if file_field in self.files:
            return self.files[file_field]
        value = self.fields.get(base64_field)
        if isinstance(value, str) and value.strip():
            return decode_base64_audio(base64_field, value)
        return None


async def read_body(request: Request) -> RequestBody:
    """JSON object, multipart form or urlencoded form: the same fields whichever a client sends."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        raw = await request.body()
        try:
            data = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"body: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidInput("body: expected a JSON object")
        return RequestBody(data)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        limit = request.app.state.settings.max_upload_bytes
        async with request.form(max_part_size=limit) as form:
            body = RequestBody({})
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    body.files[name] = Upload(name, await value.read(), value.filename or "")
                else:
                    body.fields[name] = value
            return body
    if not await request.body():
        return RequestBody({})
    raise UnsupportedMediaType(
        f"body: Content-Type {content_type!r} is not accepted; send application/json, "
        "multipart/form-data or application/x-www-form-urlencoded"
    )


Body = Annotated[RequestBody, Depends(read_body)]
