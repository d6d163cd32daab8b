"""Request bodies in the OpenAPI schema for doors whose endpoints read several media types with one model."""

from pydantic import BaseModel


def _inline(schema: dict, defs: dict) -> dict:
    """The schema with its local ``$ref``s replaced by what they name (Swagger UI forms need them inline)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def documented_body(
    model: type[BaseModel], files: dict[str, str] | None = None, overrides: dict[str, dict] | None = None
) -> dict:
    """``openapi_extra`` for a route that reads ``model`` from JSON, urlencoded or multipart bodies.

    ``files`` names the multipart file fields (with a description); ``overrides`` replaces properties'
    schemas (e.g. names a validator accepts that the field's type does not show).
    """
    raw = model.model_json_schema()
    schema = _inline(raw, raw.get("$defs", {}))
    schema.pop("title", None)
    for name, replacement in (overrides or {}).items():
        schema["properties"][name] = {**schema["properties"].get(name, {}), **replacement}
    form = {**schema, "properties": dict(schema["properties"])}
    for name, description in (files or {}).items():
        form["properties"][name] = {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
        }
        form["properties"][name]["description"] = description
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": form},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }
