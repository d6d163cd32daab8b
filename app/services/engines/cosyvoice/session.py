"""One request's view of upstream's model objects: shared weights, state of its own, no lock.

Upstream keeps some per-request state on the shared model instance (``CosyVoice2Model.token_hop_len``
grows during a stream and is never reset) and runs each request's LLM in a thread whose death it
does not notice (the model then vocodes zero tokens and fails with an unrelated error). A request
therefore runs upstream's own methods bound to an ``Overlay`` of the model: reads go through to the
shared instance, attributes the methods assign stay with the request, and the LLM thread is wrapped
so that its session id and any failure are known to the request.
"""

import inspect
import logging

log = logging.getLogger(__name__)


class Overlay:
    """Reads through to ``base``; methods of base's class run bound to the overlay; assignments stay here."""

    def __init__(self, base, **own):
        object.__setattr__(self, "_base", base)
        self.__dict__.update(own)

    @property
    def __class__(self):  # upstream checks isinstance(self.model, CosyVoice2Model) and self.__class__.__name__
        return type(self._base)

    def __getattr__(self, name: str):
        base = self._base
        attribute = inspect.getattr_static(type(base), name, None)
        if hasattr(attribute, "__get__") and name not in vars(base):  # methods, whatever wraps them
            return attribute.__get__(self, type(base))
        return getattr(base, name)


class _StopSynthesis(Exception):
    """Raised inside an abandoned request's LLM thread to end it."""


class _StopOnAppend(list):
    """Replaces a request's token list: the LLM thread's next token removes it and stops the thread."""

    def __init__(self, table: dict, key: str):
        super().__init__()
        self._table, self._key = table, key

    def append(self, _item) -> None:
        self._table.pop(self._key, None)
        raise _StopSynthesis


class RequestModel(Overlay):
    """Upstream's ``CosyVoice2Model`` / ``CosyVoice3Model`` as one request sees it."""

    def __init__(self, model, token_hop_len: int | None):
        super().__init__(model, sessions=[], failure=None, stopped=False)
        if token_hop_len is not None:
            self.token_hop_len = token_hop_len  # grows during this request's stream only

    def llm_job(self, *args, **kwargs) -> None:
        session = kwargs.get("uuid", args[-1] if args else None)
        with self._base.lock:
            self.sessions.append(session)
            stopped_before_start = self.stopped
        try:
            if not stopped_before_start:
                type(self._base).llm_job(self, *args, **kwargs)
        except _StopSynthesis:
            pass
        except Exception as exc:  # noqa: BLE001 - kept for the request, which raises it with its cause
            self.failure = exc
            log.error("upstream's LLM thread failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            with self._base.lock:
                if session in self._base.llm_end_dict:
                    self._base.llm_end_dict[session] = True  # or upstream's stream waits for tokens forever
        finally:
            with self._base.lock:
                if self.stopped:  # e.g. stopped while computing its last token: nothing else will clean up
                    self._drop(session)

    def stop(self) -> None:
        """End this request's LLM threads if still running and drop upstream's state for its sessions."""
        model = self._base
        with model.lock:
            self.stopped = True
            for session in self.sessions:
                running = model.llm_end_dict.get(session) is False
                self._drop(session)
                if running:  # its next token ends it (and the thread's own clean-up runs again)
                    model.tts_speech_token_dict[session] = _StopOnAppend(model.tts_speech_token_dict, session)

    def _drop(self, session: str) -> None:
        """Forget upstream's per-request state of ``session`` (call with the model's lock held)."""
        for name in ("tts_speech_token_dict", "llm_end_dict", "hift_cache_dict", "mel_overlap_dict", "flow_cache_dict"):
            getattr(self._base, name, {}).pop(session, None)
