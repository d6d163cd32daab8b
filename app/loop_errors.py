"""The event loop's own error reports, without a flood: out of file descriptors, asyncio reports every failed
accept() (with a traceback, each time it retries); one line per interval, with a count, says the same."""

import asyncio
import logging
import time

log = logging.getLogger(__name__)

ACCEPT_FAILED = "socket.accept() out of system resource"


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, interval: float = 30.0) -> None:
    previous = loop.get_exception_handler()
    state = {"last": -interval, "suppressed": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if _retry_after_close(context):
            return  # the accept retry of a listening socket that shutdown has closed meanwhile
        if context.get("message") != ACCEPT_FAILED:
            return previous(loop, context) if previous else loop.default_exception_handler(context)
        now = time.monotonic()
        if now - state["last"] < interval:
            state["suppressed"] += 1
            return
        more = f" ({state['suppressed']} more since the last report)" if state["suppressed"] else ""
        log.error(
            "cannot accept connections: %s%s; raise the open-files limit (ulimit -n) or lower the load",
            context.get("exception"),
            more,
        )
        state["last"], state["suppressed"] = now, 0

    loop.set_exception_handler(handler)


def _retry_after_close(context: dict) -> bool:
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    return getattr(callback, "__name__", "") == "_start_serving" and isinstance(context.get("exception"), ValueError)
