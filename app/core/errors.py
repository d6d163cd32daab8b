"""Domain errors: what went wrong and with which request parameter; no HTTP status, no protocol's field names.

``param`` is one of the core's own parameter names (``PARAMS``); each front door maps it to its own field
name and each error class to its own status and error shape (``app.api.*.errors``).
"""

# The core's parameter names, and what each means.
PARAMS = {
    "text": "the text to speak",
    "voice": "the stored voice (built-in or cloned) a request speaks with",
    "name": "the name a new voice is saved under",
    "user": "the user whose stored voices and prompts a request may use",
    "prompt_audio": "prompt audio to build a voice from",
    "prompt_text": "the transcript of the prompt audio",
    "prompt_key": "prompt audio stored under the user's prefix",
    "save_as": "the name under which a voice built during a request is saved",
    "instruction": "how to speak (自然语言控制)",
    "mode": "the way of speaking: a stored voice, zero-shot, cross-lingual or instructed",
    "speed": "the speaking rate",
    "format": "the audio format of the answer",
    "sample_rate": "the sample rate of the answer",
    "storage": "where users' voices and prompts are kept",
    "body": "the request as a whole",
    "key": "the API key a request is sent with",
}


class DomainError(Exception):
    def __init__(self, param: str | None, problem: str):
        assert param is None or param in PARAMS, param
        super().__init__(f"{param}: {problem}" if param else problem)
        self.param = param
        self.problem = problem


class Missing(DomainError):
    """A required value is absent or empty."""


class Invalid(DomainError):
    """A value was given but cannot be used."""


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class Forbidden(DomainError):
    pass


class TooLarge(DomainError):
    pass


class Unsupported(DomainError):
    """Valid, but not something this engine or door can do."""


class Unauthenticated(DomainError):
    """API keys are required and the request sent none, or one that is not valid."""


class Busy(DomainError):
    """No synthesis slot for this request: the wait queue is full, or the wait would be (or was) too long.

    ``retry_after``: seconds after which a slot is likely free (from the measured drain rate); ``reason``:
    ``queue_full``, ``wait_too_long`` or ``timeout``, for metrics."""

    def __init__(self, param: str | None, problem: str, retry_after: int = 1, reason: str = "timeout"):
        super().__init__(param, problem)
        self.retry_after = retry_after
        self.reason = reason


class EngineFailure(DomainError):
    """The speech engine failed on the server's side (the log has the cause's traceback)."""


class VoiceTableUnavailable(DomainError):
    """The shared voice table cannot be read or written right now."""


class StorageFailure(DomainError):
    """The storage answered, but not with what we asked for (e.g. refused credentials)."""


class StorageUnavailable(DomainError):
    """The storage did not answer in time, or kept failing after the retries."""


class ClientGone(DomainError):
    """The client went away before its audio was complete."""
