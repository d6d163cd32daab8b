"""Limits on what a request may send: size, pace, and the memory all bodies in flight take together."""

import asyncio

from app.api.errors import DoorError, route_path
from app.config import Settings
from app.core.errors import TooLarge

MB = 1024 * 1024


class RequestLimits:
    """Refuse a body over the size limit while it arrives (at once when its Content-Length says so), a body
    that stalls (a gap over ``body_timeout_seconds``: 408), and a body that would take the bytes held by all
    requests in flight over ``max_buffered_mb`` (503: many large uploads at once would exhaust memory)."""

    def __init__(self, app, settings: Settings, door_for):
        self.app = app
        self.limit = settings.max_upload_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.buffered_limit = int(settings.max_buffered_mb * MB)
        self.door_for = door_for
        self.buffered = 0  # body bytes of the requests in flight (one event loop: no lock needed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = TooLarge("body", f"larger than the {self.limit / MB:g} MB limit (COSYVOICE_MAX_UPLOAD_MB)")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            response = self.door_for(route_path(scope))(too_large, {})
            return await response(scope, receive, send)
        received, body_done = 0, False

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # after the body, receive() waits for the client to leave: no deadline
                return await receive()
            try:
                event = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                gap = f"no part of it arrived for {self.body_timeout:g} s (COSYVOICE_BODY_TIMEOUT_SECONDS)"
                raise DoorError(408, "request_timeout", f"body: {gap}") from None
            body_done = event["type"] != "http.request" or not event.get("more_body", False)
            size = len(event.get("body", b""))
            received += size
            self.buffered += size
            if received > self.limit:
                raise too_large
            if self.buffered > self.buffered_limit:
                held = f"{self.buffered_limit / MB:g} MB of request bodies are held already (COSYVOICE_MAX_BUFFERED_MB)"
                raise DoorError(503, "busy", f"body: {held}; retry shortly")
            return event

        try:
            return await self.app(scope, limited_receive, send)
        finally:
            self.buffered -= received
