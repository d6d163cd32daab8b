"""One voice-store interface over the shared library and each user's storage, and the async ``Voices`` facade.

A voice is found, built or saved here and nowhere else; ``SpeechService`` decides which of these a request
needs. Saving a voice built during a request is its own call (``save``), never a side effect of resolving.
"""

import asyncio
import base64
import binascii
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from app.core.audio import PromptAudio, pcm16_wav, prepare_prompt
from app.core.breaker import Breaker
from app.core.engine import SpeechEngine, VoiceRejected
from app.core.errors import (
    DomainError,
    Invalid,
    Missing,
    NotFound,
    StorageFailure,
    StorageUnavailable,
    VoiceTableUnavailable,
)
from app.core.limits import Limits
from app.core.names import VoiceName
from app.core.storage_health import StorageHealth
from app.core.synthesis import Synthesizer
from app.core.user_voices import UserStorage, user_key
from app.core.voices import Voice, VoiceLibrary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """Prompt audio as a client sent it."""

    data: bytes
    filename: str = ""

    @classmethod
    def from_pcm16(cls, raw: bytes, rate: int) -> "Upload":
        """Raw little-endian int16 mono samples (upstream's gRPC prompt), as a WAV file."""
        return cls(pcm16_wav(raw, rate), "prompt.wav")

    @classmethod
    def from_base64(cls, value: str) -> "Upload":
        """Base64, or a base64 ``data:`` URL (a browser's); a form-urlencoded "+" that arrived as a space is a "+"."""
        payload = value.strip()
        if payload.startswith("data:") and "," in payload:
            payload = payload.split(",", 1)[1]
        try:  # base64 never contains spaces
            return cls(base64.b64decode("".join(payload.replace(" ", "+").split()), validate=True))
        except (binascii.Error, ValueError):
            raise Invalid("prompt_audio", "not valid base64") from None


@dataclass(frozen=True)
class BuiltVoice:
    """A voice made from prompt audio during a request: usable at once, saved only if asked."""

    profile: dict
    prompt: PromptAudio
    prompt_text: str


class VoiceStore(Protocol):
    """Where voices are kept: the shared library or one user's storage prefix. Blocking calls."""

    def get(self, name: VoiceName) -> Voice: ...

    def names(self) -> list[str]:
        """The cloned voices' names."""

    def created(self, name: VoiceName) -> float | None:
        """When the voice was saved (Unix time), if the store knows."""

    def ensure_writable(self, name: VoiceName, overwrite: bool) -> None: ...

    def save(self, name: VoiceName, profile: dict, prompt_text: str, prompt: PromptAudio, overwrite: bool) -> Voice: ...

    def delete(self, name: VoiceName) -> None: ...


class Voices:
    def __init__(
        self,
        limits: Limits,
        engine: SpeechEngine,
        library: VoiceLibrary,
        users: UserStorage,
        synthesizer: Synthesizer,
        shared: bool,
        breaker: Breaker | None = None,
    ):
        self.limits = limits
        self.engine = engine
        self.library = library
        self.users = users
        self._synthesizer = synthesizer
        # False where the door layer gives every request a user (API keys), who then sees only the built-ins beside
        # their own voices: the shared library's cloned voices belong to nobody's key
        self.shared = shared
        self._storage_threads = ThreadPoolExecutor(8, thread_name_prefix="storage")
        self.health = StorageHealth(users.storage, library.directory, synthesizer.observer)
        self._breaker = breaker
        self._deadline = 2 * limits.storage_seconds  # a read: a stat and a get

    async def _run(self, user: VoiceName | None, fn, *args, write: bool = False):
        """Library calls in a thread; storage calls in threads of their own, so a slow bucket starves nothing, behind
        the breaker (failing fast while the storage is down) and, unless ``write``, a deadline."""
        try:
            if user is None:
                return await asyncio.to_thread(fn, *args)
            return await self._storage_call(fn, args, write)
        except (StorageFailure, StorageUnavailable, VoiceTableUnavailable) as exc:
            self._synthesizer.observer.storage_failed(exc)
            raise

    async def _storage_call(self, fn, args: tuple, write: bool):
        """One operation on a user's storage, behind the breaker (remote storage only) and, for a read, a deadline
        (a write is never abandoned half done: the storage's own timeouts bound it)."""
        guard, outcome = self._breaker, None  # outcome: "" when the storage answered, else why it failed
        if guard is not None:
            guard.before()
        call = asyncio.get_running_loop().run_in_executor(self._storage_threads, fn, *args)
        try:
            result = await (call if write else asyncio.wait_for(call, self._deadline))
            outcome = ""
        except TimeoutError:
            outcome = f"the storage did not answer within {self._deadline:g} s"
            raise StorageUnavailable("storage", outcome) from None
        except StorageUnavailable as exc:
            outcome = exc.problem
            raise
        except DomainError:  # an answer (not found, refused): the storage is there
            outcome = ""
            raise
        finally:
            if guard is not None:
                guard.report(outcome)
        return result

    def store(self, user: VoiceName | None) -> VoiceStore:
        if user is None and not self.shared:
            raise Missing("user", "every request acts for a user when the server uses API keys")
        return self.library if user is None else self.users.user(user)

    def builtin_ids(self) -> list[str]:
        return self.library.builtin_ids()

    @property
    def storage_name(self) -> str:
        return self.users.storage.name

    def library_problem(self) -> str | None:
        """Why the shared voice table cannot be read, or None; blocking (it reads the table again if it changed)."""
        self.library.names()
        return self.library.problem

    # -- reading --------------------------------------------------------------------------
    async def get(
        self, name: VoiceName, user: VoiceName | None = None, user_only: bool = False, server_first: bool = False
    ) -> Voice:
        """A stored voice: the user's own first (when a user is given), then, unless ``user_only``, the shared ones
        (only the built-ins when the server uses API keys). ``server_first``: the server's own voices before the
        user's (what a mapped name stands for), so that a built-in costs no storage round trip."""
        if server_first and not user_only and (name in self.library.builtin_ids() or self.shared):
            try:
                return await self._run(None, self.library.get, name)
            except NotFound:
                if user is None:
                    raise
                return await self._run(user, self.store(user).get, name)
        not_theirs = None
        if user is not None:
            try:
                return await self._run(user, self.store(user).get, name)
            except NotFound as exc:
                if user_only:
                    raise
                not_theirs = exc
            except (StorageFailure, StorageUnavailable):
                # the user's storage is down: a voice the server has itself still speaks (a voice of the user's own
                # by that name, if there is one, cannot be read now); any other name fails with the storage's error
                if user_only or not await self._server_has(name):
                    raise
        if self.shared:
            return await self._run(None, self.library.get, name)
        # with API keys only the built-ins: a shared voice's name (or that it cannot be used) is not told
        if name not in self.library.builtin_ids():
            raise not_theirs or NotFound("voice", f"no voice named {name!r}")
        return await self._run(None, self.library.get, name)

    async def _server_has(self, name: VoiceName) -> bool:
        if name in self.library.builtin_ids():
            return True
        return self.shared and name in await self._run(None, self.library.names)

    async def names(self, user: VoiceName | None = None) -> list[str]:
        """The cloned voices: the user's own with a user, else the shared library's."""
        return await self._run(user, self.store(user).names)

    async def created(self, name: VoiceName, user: VoiceName | None = None) -> float | None:
        return await self._run(user, self.store(user).created, name)

    async def stored_prompt(self, user: VoiceName, key: str) -> Upload:
        """Prompt audio stored under the user's prefix."""
        full_key = user_key(user, key, "prompt_key")
        data = await self._run(user, self.users.fetch, full_key, "prompt_key", f"user {user!r} has no object {key!r}")
        return Upload(data)

    # -- building and saving --------------------------------------------------------------
    async def build(self, prompt_text: str, upload: Upload) -> BuiltVoice:
        """A voice from prompt audio and its transcript ("" for none), not saved."""
        s = self.limits
        if len(prompt_text) > s.max_prompt_text_chars:
            problem = f"{len(prompt_text)} characters; the limit is {s.max_prompt_text_chars}"
            raise Invalid("prompt_text", f"{problem} (COSYVOICE_MAX_PROMPT_TEXT_CHARS)")
        prompt = await asyncio.to_thread(
            prepare_prompt, upload.data, "prompt_audio", s.prompt_min_seconds, s.prompt_max_seconds
        )
        try:
            profile = await self._synthesizer.run(self.engine.make_voice, prompt_text, prompt)
        except VoiceRejected as exc:
            raise Invalid("prompt_audio", str(exc)) from None
        return BuiltVoice(profile, prompt, prompt_text)

    async def save(self, name: VoiceName, built: BuiltVoice, overwrite: bool, user: VoiceName | None = None) -> Voice:
        store = self.store(user)
        try:
            args = (name, built.profile, built.prompt_text, built.prompt, overwrite)
            voice = await self._run(user, store.save, *args, write=True)
        except (StorageFailure, StorageUnavailable, VoiceTableUnavailable) as exc:
            self.health.save_failed(exc.problem, in_library=user is None)
            raise
        self.health.save_succeeded()
        log.info("saved voice %r from %.1f s of speech", name, built.prompt.speech_seconds)
        return voice

    async def clone(
        self, name: VoiceName, prompt_text: str, upload: Upload, overwrite: bool, user: VoiceName | None = None
    ) -> Voice:
        """Build a voice and save it; a name that cannot be written is refused before the costly build."""
        await self._run(user, self.store(user).ensure_writable, name, overwrite)
        return await self.save(name, await self.build(prompt_text, upload), overwrite, user)

    async def delete(self, name: VoiceName, user: VoiceName | None = None) -> None:
        await self._run(user, self.store(user).delete, name, write=True)

    def shutdown(self) -> None:
        self._storage_threads.shutdown(wait=False, cancel_futures=True)
        self.health.shutdown()
