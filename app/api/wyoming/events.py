"""Wyoming events read with limits: a JSON header line, then optional JSON data and a binary payload.

The ``wyoming`` library's reader trusts its peer (any length is read, a header that is JSON but not an event
raises out of the handler); a port open to a network gets this one instead, which says what is wrong.
"""

import asyncio
import json

from wyoming.event import Event

MAX_DATA_BYTES = 1024 * 1024  # a synthesize event's text is at most a few thousand characters
MAX_PAYLOAD_BYTES = 1024 * 1024  # a text-to-speech client sends no audio; one chunk of it fits anyway


class Malformed(Exception):
    """The bytes are not a Wyoming event: the connection cannot be read any further."""


def _length(header: dict, key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Malformed(f"{key}: {value!r} is not a length in bytes")
    if value > limit:
        raise Malformed(f"{key}: {value} bytes; the limit is {limit}")
    return value


def _object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        raise Malformed(f"the event's {what} is not JSON") from None
    except RecursionError:
        raise Malformed(f"the event's {what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise Malformed(f"the event's {what} is not a JSON object")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None when the peer has gone (also in the middle of an event)."""
    try:
        line = await reader.readline()
    except ValueError:  # the reader's limit (64 KiB) passed without a newline
        raise Malformed("an event header longer than 64 KiB") from None
    if not line.endswith(b"\n"):
        return None
    header = _object(line, "header")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise Malformed("the event header has no type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise Malformed("the event's data is not a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        if data_length:
            data = {**data, **_object(await reader.readexactly(data_length), "data")}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    return Event(type=kind, data=data, payload=payload)
