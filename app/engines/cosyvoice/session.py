"""One request's own copy of upstream's model object: shared weights and tables, state of its own, no lock.

Upstream keeps some per-request state on the shared model instance (``CosyVoice2Model.token_hop_len``
grows during a stream and is never reset) and runs each request's LLM in a thread whose death it does not
notice (the model then vocodes zero tokens and fails with an unrelated error). A request therefore runs
upstream's own methods on a shallow copy of the model: the weights, the per-session dicts and their lock
are the shared ones, attributes upstream's methods assign (the hop length) stay with the copy, and the
copy's ``llm_job`` is wrapped so that the LLM thread's session id, its failure and its end are the
request's to know and to decide.
"""

import copy
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_SESSION_DICTS = ("tts_speech_token_dict", "llm_end_dict", "hift_cache_dict", "mel_overlap_dict", "flow_cache_dict")


class _StopSynthesis(Exception):
    """Raised inside a request's LLM thread to end it."""


class _Tokens(list):
    """A request's token list: the LLM thread's next token ends the thread once the request is over."""

    def __init__(self, tokens: list, over: Callable[[], bool]):
        super().__init__(tokens)
        self._over = over

    def append(self, token) -> None:
        if self._over():
            raise _StopSynthesis
        super().append(token)


class RequestSession:
    """Upstream's ``CosyVoice2Model`` / ``CosyVoice3Model`` as one request runs it (``self.model``)."""

    def __init__(self, model, token_hop_len: int | None, cancelled: threading.Event | None = None):
        self._shared = model
        self._cancelled = cancelled or threading.Event()  # set when the request's client has gone
        self.sessions: list[str] = []
        self.failure: Exception | None = None
        self.stopped = False
        self.model = copy.copy(model)
        if token_hop_len is not None:
            self.model.token_hop_len = token_hop_len  # grows during this request's stream only
        self.model.llm_job = self._llm_job  # upstream starts `self.llm_job` in a thread of its own

    def _over(self) -> bool:
        return self.stopped or self._cancelled.is_set()

    def _llm_job(self, *args, **kwargs) -> None:
        shared = self._shared
        session = kwargs.get("uuid", args[-1] if args else None)
        with shared.lock:
            self.sessions.append(session)
            if session in shared.tts_speech_token_dict:
                shared.tts_speech_token_dict[session] = _Tokens(shared.tts_speech_token_dict[session], self._over)
        try:
            if not self._over():
                type(shared).llm_job(self.model, *args, **kwargs)
        except _StopSynthesis:
            pass
        except Exception as exc:  # noqa: BLE001 - kept for the request, which raises it with its cause
            self.failure = exc
            log.error("upstream's LLM thread failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        finally:
            with shared.lock:
                if self.stopped:  # nothing else will clean up after this thread
                    _drop(shared, session)
                elif session in shared.llm_end_dict:
                    shared.llm_end_dict[session] = True  # ended early: upstream's loop must not wait for more

    def stop(self) -> None:
        """End this request's LLM threads at their next token and drop upstream's state for its sessions."""
        with self._shared.lock:
            self.stopped = True
            for session in self.sessions:
                if self._shared.llm_end_dict.get(session) is not False:  # its thread is over
                    _drop(self._shared, session)


def _drop(model, session: str) -> None:
    """Forget upstream's per-request state of ``session`` (call with the model's lock held)."""
    for name in _SESSION_DICTS:
        getattr(model, name, {}).pop(session, None)
