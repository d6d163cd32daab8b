"""Serve the app with uvicorn, plus what uvicorn lacks: a deadline for a request's headers.

uvicorn (0.54) closes idle keep-alive connections, but a connection that sends its headers a byte at a time
(slowloris) is kept open for ever; a few hundred of them exhaust the process's file descriptors. Its h11
protocol is kept whole and given a timer from the moment it waits for a request until that request's headers
are complete. (The body's deadline is the app's own: ``app.main.RequestLimits``.) Its WebSocket protocol is
told when a handshake ended with an HTTP answer (a 401 for a missing API key), which it forgets.

``python -m app.server --host 127.0.0.1 --port 8000`` is what ``make run`` and the container start.
"""

import argparse
import asyncio
import ctypes
import ctypes.util
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.config import Settings
from app.main import create_app

log = logging.getLogger(__name__)


def guarded_protocol(header_timeout: float) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request's headers."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_headers()

        def connection_lost(self, exc) -> None:
            self._stop_watching()
            super().connection_lost(exc)

        def _watch_headers(self) -> None:
            """A timer while the client owes us a request line and headers; none once they are in."""
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._header_timer is None:
                    self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)
            else:
                self._stop_watching()

        def _stop_watching(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.debug("closing a connection whose request headers took over %g s", header_timeout)
                self.transport.close()

    return GuardedH11Protocol


class DeniableWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn 0.54 sends an app's HTTP answer to a WebSocket handshake but does not count the handshake as
    done, so it logs "ASGI callable returned without completing handshake" for every refused connection."""

    async def send(self, message) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def config(settings: Settings, host: str, port: int, **extra) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        http=guarded_protocol(settings.header_timeout_seconds),
        ws=DeniableWebSocketProtocol,
        ws_max_size=4 * 1024 * 1024,  # WebSocket messages (DashScope's text frames) larger than this close with 1009
        timeout_graceful_shutdown=10,
        loop="app.loop_errors:PacedLoop",  # accept() paced when descriptors run out
        **extra,
    )


def return_freed_memory() -> None:
    """Make glibc hand large freed buffers back to the system.

    glibc raises its mmap threshold after each large free (up to 32 MB), so request bodies of a few MB end up in
    the heap and stay there: 20 concurrent 19.5 MB bodies left the process 150 MB bigger for good. Fixed
    thresholds (what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set) bring it back to where it started.
    4 MiB, not lower: a torch loop of 0.5 MB temporaries ran 15-45% slower with a 256 KiB threshold (each
    one an mmap and munmap), and no slower than glibc's default with 4 MiB.
    """
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is None or not hasattr(libc, "mallopt"):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 4 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 8 * 1024 * 1024)


def main() -> None:
    return_freed_memory()
    parser = argparse.ArgumentParser(description="Serve the CosyVoice voice service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.Server(config(Settings(), args.host, args.port)).run()


if __name__ == "__main__":
    main()
