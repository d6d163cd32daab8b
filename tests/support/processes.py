"""The service in a process of its own (`python -m app.server` or uvicorn), as an operator runs it."""

import subprocess
import time

import httpx


def start_server(command: list[str], env: dict, port: int, seconds: float = 60.0, **popen) -> subprocess.Popen:
    """The server process, once it answers /health on ``port``; killed, with its error output in the failure, when it
    does not within ``seconds``."""
    server = subprocess.Popen(command, env=env, **popen)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    said = server.stderr.read().decode(errors="replace")[-2000:] if server.stderr else ""
    raise RuntimeError(f"the server did not start: {said}")
