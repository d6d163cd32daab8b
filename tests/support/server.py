"""The app in process (a TestClient) or served as `make run` serves it (app.server, on 127.0.0.1 in a background
thread: tests, bench), and what it recorded of the streams it ran."""

import threading
import time
from contextlib import contextmanager

import uvicorn
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.server import config as server_config
from tests.support.ports import free_port


@contextmanager
def running(settings: Settings):
    """Yields a TestClient of the app, started (its lifespan run) and stopped with the block."""
    with TestClient(create_app(settings)) as client:
        yield client


@contextmanager
def live_server(settings: Settings):
    """Yields (base URL, app); the server stops when the block ends."""
    port = free_port()
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


def long_settings(tmp_path, **extra) -> Settings:
    """The embedded engine's settings for texts of any length a test sends (``extra``: more settings)."""
    return Settings(data_dir=tmp_path / "d", model_dir=tmp_path / "m", max_text_chars=100_000, **extra)


def last_record(app, timeout: float = 10.0):
    """The last stream's record, once every stream started is recorded as finished (a stream's worker ends, and
    is recorded, just after its response's last byte)."""
    synth, deadline = app.state.speech.synthesizer, time.monotonic() + timeout
    while synth.stats.completed + synth.stats.cancelled + synth.stats.failed < synth.stats.started:
        assert time.monotonic() < deadline, "the last stream was never recorded as finished"
        time.sleep(0.01)
    return synth.recent[-1]


def last_engine_seconds(app, timeout: float = 10.0) -> float:
    """Seconds of audio the engine made for the last request, once its stream is recorded as finished."""
    return last_record(app, timeout).samples / app.state.speech.engine.sample_rate
