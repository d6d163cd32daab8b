"""create_app(settings) -> FastAPI: builds the engine, voice library and synthesizer once."""

import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings
from app.errors import PayloadTooLarge, error_body, install_error_handlers
from app.routes import generate, system, tts, voices
from app.services.engines import load_engine
from app.services.speech import SpeechService
from app.services.synthesis import Synthesizer
from app.services.user_voices import DownloadCache, UserVoices
from app.services.voices import VoiceLibrary
from app.storage import open_storage


class BodySizeLimit:
    """Refuse request bodies over the limit while they arrive, not after they are buffered."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"body: larger than the {self.limit / 1024 / 1024:g} MB limit (COSYVOICE_MAX_UPLOAD_MB)"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await _send_too_large(send, message)
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                raise PayloadTooLarge(message)
            return event

        return await self.app(scope, limited_receive, send)


async def _send_too_large(send, message: str) -> None:
    body = json.dumps(error_body(PayloadTooLarge.code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = load_engine(settings)
        library = VoiceLibrary(loaded.voices_dir, loaded.engine)
        synthesizer = Synthesizer(
            loaded.engine,
            settings.max_concurrency,
            settings.queue_timeout_seconds,
            settings.mp3_bitrate_kbps,
            settings.stall_timeout_seconds,
        )
        cache = DownloadCache(settings.data_dir / "cache" / "downloads", int(settings.voice_cache_mb * 1024 * 1024))
        user_voices = UserVoices(open_storage(settings), loaded.engine, cache, settings.max_upload_bytes)
        app.state.speech = SpeechService(settings, loaded.engine, library, user_voices, synthesizer)
        app.state.engine_reason = loaded.reason
        try:
            yield
        finally:
            app.state.speech.shutdown()

    app = FastAPI(title="CosyVoice voice service", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    for module in (voices, tts, generate, system):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    return app
