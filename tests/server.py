"""The app served as `make run` serves it (app.server), on 127.0.0.1 in a background thread (tests, bench)."""

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from app.config import Settings
from app.server import config as server_config


@contextmanager
def live_server(settings: Settings):
    """Yields (base URL, app); the server stops when the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = server_config(settings, "127.0.0.1", port, log_level="warning")
    app = config.app
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)
