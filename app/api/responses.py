"""HTTP responses that carry a core AudioStream."""

from starlette.responses import StreamingResponse

from app.core.audio_stream import AudioStream


class AudioResponse(StreamingResponse):
    """A streaming response that always closes its AudioStream, even if never iterated."""

    def __init__(self, stream: AudioStream, media_type: str, headers: dict[str, str] | None = None, body=None):
        """``body`` (default: the stream's bytes) is what is sent, e.g. the stream's chunks as events."""
        super().__init__(body or stream.chunks(), media_type=media_type, headers=headers)
        self._stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()
