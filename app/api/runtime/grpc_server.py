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
SERVICE = "cosyvoice.CosyVoice"
IDLE_SECONDS = 60.0  # a connection with no call in flight for this long is closed; clients reconnect
HANDSHAKE_SECONDS = 10.0  # as the HTTP port's header deadline
_SLACK_BYTES = 64 * 1024
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


class _Unreadable:
    """Bytes that are not a ``cosyvoice.Request`` (or too many of them): the call answers INVALID_ARGUMENT."""

    def __init__(self, problem: str):
        self.problem = problem


def _reader(max_bytes: int) -> Callable[[bytes], object]:
    """The request's parser: grpc logs a traceback and answers UNKNOWN for a deserializer that raises, so this
    one never does."""

    def read(data: bytes) -> object:
        if len(data) > max_bytes:
            return _Unreadable(f"the message is {len(data)} bytes; at most {max_bytes} (COSYVOICE_MAX_UPLOAD_MB)")
        try:
            return cosyvoice_pb2.Request.FromString(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, or anything its parser meets in hostile bytes
            return _Unreadable(f"not a cosyvoice.Request ({type(exc).__name__})")

    return read


def _speech_request(request) -> SpeechRequest:
    if isinstance(request, _Unreadable):
        raise Invalid(None, request.problem)
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
            user = self._user(context)  # the key first: a caller without one learns nothing else
            request = acting_for(_speech_request(request), user)
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
    options = [
        # a message a little over the limit reaches our reader, which refuses it with INVALID_ARGUMENT; a larger
        # one is cut off by grpc itself (RESOURCE_EXHAUSTED) before it is held in memory
        ("grpc.max_receive_message_length", max_message_bytes + _SLACK_BYTES),
        ("grpc.max_connection_idle_ms", int(IDLE_SECONDS * 1000)),  # a channel with no call is closed (GOAWAY)
        ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_SECONDS * 1000)),  # a connection that says nothing
    ]
    server = grpc.aio.server(options=options)
    service = CosyVoiceService(speech, keys, rejected)
    inference = grpc.unary_stream_rpc_method_handler(
        service.Inference,
        request_deserializer=_reader(max_message_bytes),
        response_serializer=cosyvoice_pb2.Response.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Inference": inference}),))
    server.add_registered_method_handlers(SERVICE, {"Inference": inference})
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC: cannot listen on {address}")
    await server.start()
    log.info("gRPC (upstream's cosyvoice.CosyVoice) listening on %s", address)
    return server
