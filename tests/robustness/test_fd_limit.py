"""Out of file descriptors, the server says so once per interval (not per failed accept) and recovers."""

import os
import resource
import socket
import subprocess
import sys
import time

import httpx

from tests.support.ports import free_port

FD_LIMIT = 128


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_fd_exhaustion_is_reported_once_and_survived(tmp_path):
    port = free_port()
    env = {**os.environ, "COSYVOICE_ENGINE": "espeak", "COSYVOICE_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "app.server", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, preexec_fn=_limit_fds)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
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
