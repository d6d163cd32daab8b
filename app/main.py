"""create_app(settings) -> FastAPI: builds the core once and mounts the front doors."""

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import cors, system, web
from app.api import metrics as metrics_door
from app.api.dashscope import enrollment as dashscope_enrollment
from app.api.dashscope import errors as dashscope_errors
from app.api.dashscope import http as dashscope_http
from app.api.dashscope import ws as dashscope_ws
from app.api.errors import install_error_handlers
from app.api.keys import ApiKeys, RequireApiKey
from app.api.limits import RequestLimits
from app.api.openai import errors as openai_errors
from app.api.openai import router as openai_router
from app.api.runtime import grpc_server
from app.api.runtime import http as runtime_http
from app.api.seed import errors as seed_errors
from app.api.seed import generate, sillytavern, tts, voices
from app.api.wyoming import door as wyoming
from app.config import Settings
from app.core.breaker import Breaker
from app.core.fetch import FetchPolicy
from app.core.limits import Limits
from app.core.speech import SpeechService
from app.core.synthesis import Synthesizer
from app.core.user_voices import DownloadCache, UserStorage
from app.core.voice_store import Voices
from app.core.voices import VoiceLibrary
from app.engines import load_engine
from app.loop_errors import quiet_loop_reports
from app.storage import open_storage
from app.storage.local import LocalStorage


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = ApiKeys(settings.api_keys_file) if settings.api_keys_file else None  # a bad file stops the start here
    metrics = metrics_door.Metrics()
    limits = Limits(
        max_text_chars=settings.max_text_chars,
        max_prompt_text_chars=settings.max_prompt_text_chars,
        prompt_min_seconds=settings.prompt_min_seconds,
        prompt_max_seconds=settings.prompt_max_seconds,
        # each try's timeout, the tries, and their backoff (0.2 s, 0.4 s, ...)
        storage_seconds=settings.storage_timeout_seconds * (settings.storage_retries + 1)
        + 0.2 * (2**settings.storage_retries - 1),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        quiet_loop_reports(asyncio.get_running_loop())
        loaded = load_engine(settings, observer=metrics)
        synthesizer = Synthesizer(
            loaded.engine,
            settings.max_concurrency,
            settings.queue_timeout_seconds,
            settings.stall_timeout_seconds,
            settings.max_queued,
            observer=metrics,
        )
        cache = DownloadCache(settings.data_dir / "cache" / "downloads", int(settings.voice_cache_mb * 1024 * 1024))
        storage = open_storage(settings)
        users = UserStorage(storage, loaded.engine, cache, settings.max_upload_bytes)
        library = VoiceLibrary(loaded.voices_dir, loaded.engine)
        if isinstance(storage, LocalStorage):  # what a crash left in per-user storage, swept as the library's is
            await asyncio.to_thread(storage.sweep)
            await asyncio.to_thread(users.sweep_orphans)
        # with API keys every request acts for a user, who sees the built-ins and their own voices only
        # a remote storage fails fast while it is down; a local disk's refusals (full) leave its reads alone
        guard = Breaker() if settings.storage == "oss" else None
        voice_store = Voices(limits, loaded.engine, library, users, synthesizer, shared=keys is None, breaker=guard)
        app.state.speech = SpeechService(loaded.engine, voice_store, synthesizer, limits, settings.mp3_bitrate_kbps)
        app.state.engine_reason = loaded.reason
        metrics.speech = app.state.speech
        grpc = home_assistant = None
        try:
            if settings.grpc_port:
                grpc = await grpc_server.start(
                    app.state.speech,
                    settings.grpc_host,
                    settings.grpc_port,
                    settings.max_upload_bytes,
                    keys,
                    metrics.rejected,
                )
            if settings.wyoming_port:
                home_assistant = await wyoming.start(
                    app.state.speech,
                    settings.wyoming_host,
                    settings.wyoming_port,
                    settings.wyoming_user,
                    app.version,
                    shared=keys is None,
                )
            yield
        finally:
            if home_assistant is not None:
                await home_assistant.stop()
            if grpc is not None:
                await grpc.stop(grace=5)
            app.state.speech.shutdown()

    app = FastAPI(title="CosyVoice voice service", version="0.2.0", lifespan=lifespan)
    app.state.settings = settings
    fetch_hosts = frozenset(host.lower() for host in settings.fetch_hosts)
    app.state.fetch_policy = FetchPolicy(
        fetch_hosts, settings.fetch_private, settings.max_upload_bytes, settings.fetch_timeout_seconds
    )
    app.state.metrics = metrics
    doors = [
        ("/v1/", openai_errors.render),
        (runtime_http.PREFIX, runtime_http.render),
        (dashscope_errors.PREFIX, dashscope_errors.render),
        (dashscope_ws.PATH, dashscope_errors.render),  # a refused handshake
    ]
    door_for = install_error_handlers(app, doors, default=seed_errors.render)
    seed = (voices.router, tts.router, generate.router, sillytavern.router)
    dashscope = (dashscope_ws.router, dashscope_http.router, dashscope_enrollment.router)
    for router in (*seed, openai_router.router, runtime_http.router, *dashscope, system.router, metrics_door.router):
        app.include_router(router)
    web.install(app)
    if keys is not None:  # inside the body limits: a refusal that leaves a body unread closes the connection
        app.add_middleware(RequireApiKey, keys=keys, door_for=door_for, rejected=metrics.rejected)
    app.add_middleware(RequestLimits, settings=settings, door_for=door_for, rejected=metrics.rejected)
    # outside the keys and limits: a preflight carries no key, and a page must be able to read a 401 or a 429
    cors.install(app, settings.cors_origins)
    app.add_middleware(metrics_door.RequestMetrics, metrics=metrics)  # outermost: it sees every answer
    return app
