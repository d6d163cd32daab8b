"""The event loop's own reports, without a flood: out of file descriptors, asyncio reports every failed accept()
(with a traceback, each time it retries): one line per interval, with a count, says the same. And a client that
leaves while its audio is being written is the client's business: asyncio's warning about writes to a closed
socket is dropped (the stream notices the client is gone and stops)."""

import asyncio
import errno
import logging
import time

log = logging.getLogger(__name__)

ACCEPT_FAILED = "socket.accept() out of system resource"
WRITE_TO_CLOSED = "socket.send() raised exception."  # asyncio's warning from the fifth write after a close


class _ClientLeft(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != WRITE_TO_CLOSED


_CLIENT_LEFT = _ClientLeft()


def quiet_loop_reports(loop: asyncio.AbstractEventLoop, interval: float = 30.0) -> None:
    logging.getLogger("asyncio").addFilter(_CLIENT_LEFT)  # the same object each time: added once
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


_SHORT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _FailOnce:
    """The listening socket as one pass of accepts sees it: after the first shortage of descriptors the rest of
    the pass finds nothing more to accept."""

    def __init__(self, sock):
        self.sock, self._short = sock, False

    def accept(self):
        if self._short:
            raise BlockingIOError
        try:
            return self.sock.accept()
        except OSError as exc:
            self._short = exc.errno in _SHORT_OF
            raise

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class PacedLoop(asyncio.SelectorEventLoop):
    """The server's event loop. Out of descriptors, CPython 3.11's pass of accepts goes on after the first failure
    (uvicorn's backlog: 2048 tries a pass), and each failure schedules another retry a second later: measured
    with scripts/fd_probe.py, a quarter of a core spent on failing accept() calls. Here a pass ends at the first
    shortage, and asyncio retries once, a second later."""

    def _accept_connection(self, protocol_factory, sock, *args, **kwargs):
        raw = sock.sock if isinstance(sock, _FailOnce) else sock  # the retry hands back what the pass was given
        return super()._accept_connection(protocol_factory, _FailOnce(raw), *args, **kwargs)
