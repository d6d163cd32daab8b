"""Limits on what a request may send: size, pace, and the memory all bodies in flight take together."""

import asyncio

from app.api.errors import DoorError, route_path
from app.config import Settings

MB = 1024 * 1024


class RequestLimits:
    """Refuse a body over the size limit while it arrives (at once when its Content-Length says so), a body
    that has not all arrived ``body_timeout_seconds`` after its first part was awaited (408), and a body that
    would take the bytes held by all requests in flight over ``max_buffered_mb`` (503: many large uploads at
    once would exhaust memory). An answer that leaves before the whole body arrived says ``Connection: close``,
    so a client cannot hold the connection by trickling the rest of it."""

    def __init__(self, app, settings: Settings, door_for, rejected):
        self.app = app
        self.rejected = rejected  # (reason) -> None, for the metrics
        self.limit = settings.max_upload_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.buffered_limit = int(settings.max_buffered_mb * MB)
        self.door_for = door_for
        self.buffered = 0  # body bytes of the requests in flight (one event loop: no lock needed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = f"body: larger than the {self.limit / MB:g} MB limit (COSYVOICE_MAX_UPLOAD_MB)"
        too_large = DoorError(413, "payload_too_large", limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            self.rejected("too_large")
            response = self.door_for(route_path(scope))(too_large, {})
            response.headers["connection"] = "close"  # the body is not read: the connection cannot be reused
            return await response(scope, receive, send)
        received, body_done, deadline = 0, False, None
        if declared == b"0" or (declared is None and b"transfer-encoding" not in dict(scope["headers"])):
            body_done = True  # nothing to wait for

        async def limited_receive():
            nonlocal received, body_done, deadline
            if body_done:  # after the body, receive() waits for the client to leave: no deadline
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_timeout
            try:
                event = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                self.rejected("body_timeout")
                late = f"it did not all arrive within {self.body_timeout:g} s (COSYVOICE_BODY_TIMEOUT_SECONDS)"
                raise DoorError(408, "request_timeout", f"body: {late}") from None
            body_done = event["type"] != "http.request" or not event.get("more_body", False)
            size = len(event.get("body", b""))
            received += size
            self.buffered += size
            if received > self.limit:
                self.rejected("too_large")
                raise too_large
            if self.buffered > self.buffered_limit:
                self.rejected("body_budget")
                held = f"{self.buffered_limit / MB:g} MB of request bodies are held already (COSYVOICE_MAX_BUFFERED_MB)"
                raise DoorError(503, "busy", f"body: {held}; retry shortly", headers={"retry-after": "1"})
            return event

        async def closing_send(message):
            if message["type"] == "http.response.start" and not body_done:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            return await self.app(scope, limited_receive, closing_send)
        finally:
            self.buffered -= received
