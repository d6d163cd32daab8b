"""Upstream CosyVoice's gRPC API (``cosyvoice.CosyVoice/Inference``, runtime/python/grpc): one request, raw int16
PCM chunks back as they are synthesized. Served on ``COSYVOICE_GRPC_PORT`` beside the HTTP app, in its event loop,
started and stopped with it."""

import logging
from collections.abc import Callable

import grpc

from app.api.keys import ApiKeys, check_key, presented_key
from app.api.runtime.calls import GRPC_ERRORS, PCM, acting_for, speech_request
from app.core.errors import DomainError, Invalid, Unauthenticated
from app.core.speech import SpeechRequest, SpeechService
from app.core.voice_store import Upload

try:  # generated from cosyvoice.proto by `make install`
    from app.api.runtime import cosyvoice_pb2, cosyvoice_pb2_grpc
except ImportError as exc:  # pragma: no cover - a checkout that skipped `make install`
    cosyvoice_pb2 = cosyvoice_pb2_grpc = None
    _STUBS_MISSING = exc
else:
    _STUBS_MISSING = None

log = logging.getLogger(__name__)

PROMPT_RATE = 16000  # upstream's prompt_audio: raw int16 at 16 kHz
_KINDS = {
    "sft_request": "sft",
    "zero_shot_request": "zero_shot",
    "cross_lingual_request": "cross_lingual",
    "instruct_request": "instruct",
}


def _prompt(raw: bytes) -> Upload | None:
    if not raw:
        return None
    if len(raw) % 2:
        raise Invalid("prompt_audio", f"{len(raw)} bytes is not whole int16 samples (raw 16 kHz PCM)")
    return Upload.from_pcm16(raw, PROMPT_RATE)


def _speech_request(request) -> SpeechRequest:
    kind = request.WhichOneof("RequestPayload")
    if kind is None:
        raise Invalid(None, f"the request sets none of {', '.join(_KINDS)}")
    fields = getattr(request, kind)
    return speech_request(
        _KINDS[kind],
        fields.tts_text,
        spk_id=getattr(fields, "spk_id", ""),
        prompt_text=getattr(fields, "prompt_text", ""),
        prompt_audio=_prompt(getattr(fields, "prompt_audio", b"")),
        instruct_text=getattr(fields, "instruct_text", ""),
    )


class CosyVoiceService(cosyvoice_pb2_grpc.CosyVoiceServicer if cosyvoice_pb2_grpc else object):
    def __init__(self, speech: SpeechService, keys: ApiKeys | None, rejected: Callable[[str], None]):
        self.speech = speech
        self.keys = keys
        self.rejected = rejected  # counts a refused call (the metrics' observer)

    def _user(self, context) -> str:
        """With API keys: the user of the key in the call's metadata (``authorization: Bearer`` or ``x-api-key``)."""
        if self.keys is None:
            return ""
        metadata = dict(context.invocation_metadata() or ())
        try:
            return check_key(self.keys, presented_key(metadata.get("authorization"), metadata.get("x-api-key")))
        except Unauthenticated:
            self.rejected("unauthenticated")
            raise

    async def Inference(self, request, context):  # noqa: N802 - the proto's name
        stream = None
        try:
            request = acting_for(_speech_request(request), self._user(context))
            stream = await self.speech.synthesize(request, PCM, lambda: _gone(context))
            async for chunk in stream.chunks():
                yield cosyvoice_pb2.Response(tts_audio=chunk)
        except DomainError as exc:  # before the first chunk, or the engine failed after it
            said = GRPC_ERRORS.domain(exc, {})
            await context.abort(getattr(grpc.StatusCode, said.code), said.message)
        except Exception:  # noqa: BLE001 - a bug: INTERNAL with the details in our log, not grpc's UNKNOWN
            log.exception("gRPC Inference failed")
            await context.abort(grpc.StatusCode.INTERNAL, "synthesis failed; the server log has the details")
        finally:
            if stream is not None:
                stream.close()
        if stream.ended_early and not context.done():  # connected, but it read nothing for the stall timeout
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the client read no audio for too long")


async def _gone(context) -> bool:
    return context.done()


async def start(
    speech: SpeechService,
    host: str,
    port: int,
    max_message_bytes: int,
    keys: ApiKeys | None,
    rejected: Callable[[str], None],
) -> grpc.aio.Server:
    if _STUBS_MISSING is not None:
        raise RuntimeError(
            f"COSYVOICE_GRPC_PORT is set but the gRPC stubs are missing ({_STUBS_MISSING}); "
            "`make install` generates them from app/api/runtime/cosyvoice.proto"
        )
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes)])
    cosyvoice_pb2_grpc.add_CosyVoiceServicer_to_server(CosyVoiceService(speech, keys, rejected), server)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC: cannot listen on {address}")
    await server.start()
    log.info("gRPC (upstream's cosyvoice.CosyVoice) listening on %s", address)
    return server
