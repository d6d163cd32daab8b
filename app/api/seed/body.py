"""The seed door's one body reader: JSON object, multipart form or urlencoded form, the same fields in each.

The seed's clients send all three to the same endpoints, which FastAPI's body parameters cannot express; the
models are still Pydantic's, and ``documented`` puts them in the OpenAPI schema for every media type.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.api.bodies import BodyProblem, read_form, read_json
from app.api.deps import user_for
from app.api.errors import DoorError, field_names, validation_problems
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
            parsed = model.model_validate(self.fields)
        except ValidationError as exc:
            problems = "; ".join(f"{name}: {problem}" for name, problem in validation_problems(exc))
            if all(e["type"] == "missing" for e in exc.errors()):
                raise DoorError(400, "missing_field", problems) from None
            raise DoorError(422, "invalid_input", problems) from None
        if "user_id" in model.model_fields:  # with API keys, always the key's user
            parsed = parsed.model_copy(update={"user_id": user_for(self.request, parsed.user_id)})
        return parsed

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
            return await asyncio.to_thread(Upload.from_base64, value)
        return None


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


async def _json_object(raw: bytes) -> dict:
    try:
        data = await read_json(raw or b"{}")
    except BodyProblem as exc:
        raise _invalid(exc.field, exc.problem) from None
    if not isinstance(data, dict):
        raise _invalid("body", "expected a JSON object")
    return data


async def _form(request: Request) -> RequestBody:
    try:
        form = await read_form(request, request.app.state.settings.max_upload_bytes)
    except BodyProblem as exc:
        if exc.malformed:
            raise DoorError(400, "bad_request", str(exc)) from None
        raise _invalid(exc.field, exc.problem) from None
    body = RequestBody(request, {})
    try:
        for name, value in form.multi_items():
            if name in body.fields or name in body.files:
                raise _invalid(name, "sent more than once")
            if isinstance(value, UploadFile):
                body.files[name] = Upload(await value.read(), value.filename or "")
            else:
                body.fields[name] = value
    finally:
        await form.close()
    return body


Body = Annotated[RequestBody, Depends(read_body)]


def missing(name: str, problem: str) -> DoorError:
    """A field the seed requires here (the seed's clients expect 400 for these)."""
    return DoorError(400, "missing_field", f"{name}: {problem}")
