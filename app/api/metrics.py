"""Prometheus metrics (prometheus-client, one registry per app) and the probes: /metrics, /ready.

``Metrics`` is the core's observer (streams that ended, requests refused for load, storage failures), the
engine's (its batched LLM steps) and an ASGI middleware counting every HTTP request and WebSocket session by
route template and status.
"""

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response

from app.api.deps import Speech
from app.core.errors import DomainError
from app.core.observer import StreamRecord

router = APIRouter(tags=["system"])

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}  # any other token a client sends: "other"
_READY_TIMEOUT = 5.0


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        into = {"registry": self.registry}
        self.speech = None  # set when the app's lifespan has built the core
        self.requests = Counter(
            "cosyvoice_requests",
            "HTTP requests and WebSocket sessions",
            ["route", "method", "status"],
            **into,
        )
        self.request_seconds = Histogram(
            "cosyvoice_request_seconds",
            "Time from a request's arrival to its last byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            **into,
        )
        self.first_byte_seconds = Histogram(
            "cosyvoice_first_byte_seconds",
            "Time from a request's arrival to the first byte of its answer (for speech: the first audio byte)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            **into,
        )
        self.first_audio_seconds = Histogram(
            "cosyvoice_synthesis_first_audio_seconds",
            "Time from a synthesis' start to the engine's first audio",
            buckets=_LATENCY_BUCKETS,
            **into,
        )
        self.rtf = Histogram(
            "cosyvoice_synthesis_rtf",
            "Real-time factor of completed syntheses (seconds taken per second of audio)",
            buckets=_RTF_BUCKETS,
            **into,
        )
        self.syntheses = Counter("cosyvoice_syntheses", "Syntheses that ended, by outcome", ["outcome"], **into)
        self.audio_seconds = Counter("cosyvoice_audio_seconds", "Seconds of audio produced", **into)
        self.rejections = Counter(
            "cosyvoice_rejected", "Requests refused for load or access, by reason", ["reason"], **into
        )
        self.storage_errors = Counter(
            "cosyvoice_storage_errors", "Storage and voice-table failures, by kind", ["kind"], **into
        )
        self.llm_batch = Histogram(
            "cosyvoice_llm_batch_size",
            "Requests in each batched LLM decode step",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
            **into,
        )
        self.llm_step_seconds = Histogram(
            "cosyvoice_llm_step_seconds",
            "Time of each LLM step: a batched decode step, or a piece of a new request's prompt (prefill)",
            ["kind"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            **into,
        )
        self.wave_batch = Histogram(
            "cosyvoice_token2wav_batch_size",
            "Streams whose chunks ran together in each token-to-wave pass, by stage (flow, vocoder)",
            ["stage"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
            **into,
        )
        self.wave_seconds = Histogram(
            "cosyvoice_token2wav_batch_seconds",
            "Time of each token-to-wave pass over the chunks gathered into it, by stage (flow, vocoder)",
            ["stage"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
            **into,
        )
        active = Gauge("cosyvoice_syntheses_active", "Syntheses holding an engine slot", **into)
        active.set_function(lambda: self.speech.load()[0] if self.speech else 0)
        queued = Gauge("cosyvoice_syntheses_queued", "Requests waiting for an engine slot", **into)
        queued.set_function(lambda: self.speech.load()[1] if self.speech else 0)
        voices = Gauge("cosyvoice_voices", "Voices: built-in, and cloned in the shared library", ["kind"], **into)
        voices.labels("builtin").set_function(lambda: len(self.speech.builtin_voices()) if self.speech else 0)
        voices.labels("shared").set_function(lambda: self.speech.shared_voice_count() if self.speech else 0)

    # -- the core's observer ------------------------------------------------------------------
    def stream_ended(self, record: StreamRecord) -> None:
        self.syntheses.labels(record.outcome).inc()
        self.audio_seconds.inc(record.audio_seconds)
        if record.first_chunk_seconds is not None:
            self.first_audio_seconds.observe(record.first_chunk_seconds)
        if record.outcome == "completed" and record.audio_seconds > 0:
            self.rtf.observe(record.seconds / record.audio_seconds)

    def engine_step(self, kind: str, size: int, seconds: float) -> None:
        if kind in ("flow", "vocoder"):
            self.wave_batch.labels(kind).observe(size)
            self.wave_seconds.labels(kind).observe(seconds)
            return
        if kind == "decode":
            self.llm_batch.observe(size)
        self.llm_step_seconds.labels(kind).observe(seconds)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def storage_failed(self, error: DomainError) -> None:
        self.storage_errors.labels(type(error).__name__).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts and times each request by its route's template (``unmatched`` for no route)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started, status, first_byte = time.perf_counter(), None, None

        async def watched_send(message):
            nonlocal status, first_byte
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif kind == "websocket.accept":
                status = 101
            elif first_byte is None and (message.get("body") or message.get("bytes") or message.get("text")):
                first_byte = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "WEBSOCKET")
            method = method if method in _METHODS or method == "WEBSOCKET" else "other"
            m = self.metrics
            m.requests.labels(template, method, str(status or 500)).inc()
            m.request_seconds.labels(template).observe(time.perf_counter() - started)
            if first_byte is not None:
                m.first_byte_seconds.labels(template).observe(first_byte - started)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus' text format."""
    body = await asyncio.to_thread(request.app.state.metrics.exposition)  # reads the voice table when it changed
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/ready")
async def ready(speech: Speech) -> JSONResponse:
    """Readiness: the engine is loaded, the voice table reads, and the storage answers (within 5 s)."""
    body = await speech.readiness(_READY_TIMEOUT)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)
