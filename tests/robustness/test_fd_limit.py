"""Out of file descriptors, the server says so once per interval (not per failed accept) and recovers."""

import errno
import os
import resource
import socket
import subprocess
import sys
import time

import httpx

from tests.support.ports import free_port
from tests.support.processes import start_server

FD_LIMIT = 128


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_fd_exhaustion_is_reported_once_and_survived(tmp_path):
    port = free_port()
    env = {**os.environ, "COSYVOICE_ENGINE": "espeak", "COSYVOICE_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "app.server", "--port", str(port)]
    server = start_server(command, env, port, stderr=subprocess.PIPE, preexec_fn=_limit_fds)
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * FD_LIMIT)]
        time.sleep(3.5)  # asyncio retries accept() every second
        for sock in held:
            sock.close()
        time.sleep(1.5)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"] == "ok"
    finally:
        server.terminate()
        log = server.communicate(timeout=20)[1].decode()
    reports = log.count("cannot accept connections")
    assert reports == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


class _Exhausted:
    """A listening socket whose process has no descriptor left: every accept() fails with EMFILE."""

    def __init__(self, real: socket.socket):
        self.real, self.tries = real, 0

    def accept(self):
        self.tries += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_a_pass_of_accepts_ends_at_the_first_shortage():
    """CPython 3.11's own loop tries `backlog` times a pass (uvicorn's: 2048), scheduling a retry for each failure;
    the server's loop stops at the first, and retries once."""
    import asyncio

    from app.loop_errors import PacedLoop

    for loop_class, tries in ((asyncio.SelectorEventLoop, 100), (PacedLoop, 1)):
        loop = loop_class()
        loop.set_exception_handler(lambda loop, context: None)
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            exhausted = _Exhausted(listening)
            loop._accept_connection(lambda: None, exhausted, backlog=100)
            assert exhausted.tries == tries, loop_class
            assert len(loop._scheduled) == tries  # the retries asyncio scheduled, one per failure
        loop.close()
