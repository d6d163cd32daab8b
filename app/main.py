"""create_app(settings) -> FastAPI: builds the core once and mounts the front doors."""

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import system
from app.api.errors import DoorError, install_error_handlers, route_path
from app.api.openai import errors as openai_errors
from app.api.openai import router as openai_router
from app.api.seed import errors as seed_errors
from app.api.seed import generate, tts, voices
from app.config import Settings
from app.core.errors import TooLarge
from app.core.speech import SpeechService
from app.core.synthesis import Synthesizer
from app.core.user_voices import DownloadCache, UserStorage
from app.core.voice_store import Voices
from app.core.voices import VoiceLibrary
from app.engines import load_engine
from app.loop_errors import quiet_accept_errors
from app.storage import open_storage


class RequestLimits:
    """Refuse request bodies over the size limit while they arrive, not after they are buffered, and bodies
    that stall: a gap of more than ``body_timeout`` seconds between their parts answers 408."""

    def __init__(self, app, limit: int, body_timeout: float, door_for):
        self.app = app
        self.limit = limit
        self.body_timeout = body_timeout
        self.door_for = door_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = TooLarge("body", f"larger than the {self.limit / 1024 / 1024:g} MB limit (COSYVOICE_MAX_UPLOAD_MB)")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            response = self.door_for(route_path(scope))(too_large, {})
            return await response(scope, receive, send)
        received, body_done = 0, False

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # after the body, receive() waits for the client to leave: no deadline
                return await receive()
            try:
                event = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                gap = f"no part of it arrived for {self.body_timeout:g} s (COSYVOICE_BODY_TIMEOUT_SECONDS)"
                raise DoorError(408, "request_timeout", f"body: {gap}") from None
            body_done = event["type"] != "http.request" or not event.get("more_body", False)
            received += len(event.get("body", b""))
            if received > self.limit:
                raise too_large
            return event

        return await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        quiet_accept_errors(asyncio.get_running_loop())
        loaded = load_engine(settings)
        synthesizer = Synthesizer(
            loaded.engine, settings.max_concurrency, settings.queue_timeout_seconds, settings.stall_timeout_seconds
        )
        cache = DownloadCache(settings.data_dir / "cache" / "downloads", int(settings.voice_cache_mb * 1024 * 1024))
        users = UserStorage(open_storage(settings), loaded.engine, cache, settings.max_upload_bytes)
        library = VoiceLibrary(loaded.voices_dir, loaded.engine)
        voice_store = Voices(settings, loaded.engine, library, users, synthesizer)
        app.state.speech = SpeechService(settings, loaded.engine, voice_store, synthesizer)
        app.state.engine_reason = loaded.reason
        try:
            yield
        finally:
            app.state.speech.shutdown()

    app = FastAPI(title="CosyVoice voice service", version="0.2.0", lifespan=lifespan)
    app.state.settings = settings
    door_for = install_error_handlers(app, [("/v1/", openai_errors.render)], default=seed_errors.render)
    for router in (voices.router, tts.router, generate.router, openai_router.router, system.router):
        app.include_router(router)
    limits = {"limit": settings.max_upload_bytes, "body_timeout": settings.body_timeout_seconds}
    app.add_middleware(RequestLimits, **limits, door_for=door_for)
    return app
