"""Per-user voices and prompts in storage, the seed's layout: ``{user_id}/model/cosyvoice/{name}.pt``.

A voice file holds one speaker entry (the engine's profile: upstream's spk2info format for CosyVoice).
Files are read with ``torch.load(weights_only=True)`` and checked against the running engine before
use; downloads are cached locally by key and ETag in a size-bounded cache, so a replica fetches a
voice once, not on every request. Every user's keys start with their own ``user_id/``: names are
validated (app.core.names) before they become keys, so no request can reach another user's objects.
"""

import hashlib
import io
import logging
import os
import pickle
import threading
import time
from pathlib import Path

import torch

from app.core.audio import WIDE_RATE, PromptAudio, wav_bytes
from app.core.engine import SpeechEngine
from app.core.errors import AlreadyExists, Invalid, NotFound, StorageFailure, StorageUnavailable, TooLarge
from app.core.files import atomic_write_bytes
from app.core.names import VoiceName
from app.core.storage import ObjectNotFound, Storage
from app.core.voices import Voice

log = logging.getLogger(__name__)

VOICE_FOLDER = "model/cosyvoice"
ORPHAN_GRACE_SECONDS = 60.0  # a save writes its source and its voice file well within this
MAX_KEY_PARTS = 8


def voice_key(user_id: VoiceName, name: VoiceName) -> str:
    return f"{user_id}/{VOICE_FOLDER}/{name}.pt"


def user_key(user_id: VoiceName, key: str, param: str) -> str:
    """A key inside the user's own prefix; each '/'-separated part must be a valid name."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise Invalid(param, f"{key!r} is not a storage key (no leading '/', backslash or NUL)")
    parts = key.split("/")
    if parts[0] == user_id and len(parts) > 1:  # given with the user's prefix already
        parts = parts[1:]
    if len(parts) > MAX_KEY_PARTS:
        raise Invalid(param, f"more than {MAX_KEY_PARTS} levels of folders")
    return "/".join([user_id, *(VoiceName.check(param, part) for part in parts)])


class DownloadCache:
    """Local copies of stored objects, named by key and ETag, evicting the least recently used."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, etag: str) -> Path:
        return self.folder / hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()

    def get(self, key: str, etag: str) -> bytes | None:
        path = self._path(key, etag)
        with self._lock:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            _touch(path)
            return data

    def put(self, key: str, etag: str, data: bytes) -> None:
        """Best effort: a cache that cannot be written (a full disk) only means the next read downloads again."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            try:
                atomic_write_bytes(self._path(key, etag), data)
            except OSError as exc:
                log.warning("the download cache cannot be written (%s); reading from the storage", exc.strerror)
                return
            _touch(self._path(key, etag))
            files = sorted((p.stat().st_mtime_ns, p.stat().st_size, p) for p in self.folder.iterdir() if p.is_file())
            total = sum(size for _, size, _ in files)
            for _, size, path in files:
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size


def _touch(path: Path) -> None:
    """Mark as just used, with the clock's full resolution (file systems may keep coarse mtimes)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class UserStorage:
    """All users' voices and prompts in one storage, with a local cache of what was downloaded."""

    def __init__(self, storage: Storage, engine: SpeechEngine, cache: DownloadCache, max_bytes: int):
        self.storage = storage
        self._engine = engine
        self._cache = cache
        self._max_bytes = max_bytes

    def fetch(self, key: str, param: str, missing: str) -> bytes:
        """An object's bytes, from the cache when its ETag is unchanged; ``missing`` is the NotFound problem."""
        try:
            info = self.storage.stat(key)
            if info.size > self._max_bytes:
                raise TooLarge(param, f"the stored object is {info.size} bytes, over the upload limit")
            data = self._cache.get(key, info.etag)
            if data is None:
                data = self.storage.get(key)
                self._cache.put(key, info.etag, data)
        except ObjectNotFound:
            raise NotFound(param, missing) from None
        return data

    def user(self, user_id: VoiceName) -> "UserVoices":
        return UserVoices(self, user_id)

    def sweep_orphans(self, grace: float = ORPHAN_GRACE_SECONDS) -> int:
        """Remove the sources of voices whose file was never written (a crash between the two writes of a save),
        the same rule as the shared library's start-up; a source younger than ``grace`` may be a save in progress
        in another process, and is left. How many were removed."""
        keys = set(self.storage.list(""))
        removed = 0
        for key in sorted(keys):
            parts = key.split("/")
            if len(parts) != 5 or "/".join(parts[1:4]) != f"{VOICE_FOLDER}/sources" or "." not in parts[4]:
                continue
            name, suffix = parts[4].rsplit(".", 1)
            if suffix not in ("wav", "txt") or voice_key(parts[0], name) in keys:
                continue
            try:
                if time.time() - self.storage.stat(key).modified < grace:
                    continue
                log.warning("removing the source of a voice that was never saved: %s", key)
                self.storage.delete(key)
            except (ObjectNotFound, StorageFailure, StorageUnavailable) as exc:  # gone meanwhile, or not removable
                log.warning("left %s: %s", key, exc)
                continue
            removed += 1
        return removed


class UserVoices:
    """One user's voices: the VoiceStore of ``{user_id}/model/cosyvoice/``. Blocking calls."""

    def __init__(self, storage: UserStorage, user_id: VoiceName):
        self._all = storage
        self.storage = storage.storage
        self.user_id = user_id

    def get(self, name: VoiceName) -> Voice:
        missing = f"user {self.user_id!r} has no voice named {name!r}"
        data = self._all.fetch(voice_key(self.user_id, name), "voice", missing)
        return Voice(name, False, read_voice_file(data, self._all._engine, "voice"))

    def ensure_writable(self, name: VoiceName, overwrite: bool) -> None:
        if not overwrite and self.storage.exists(voice_key(self.user_id, name)):
            raise AlreadyExists("name", f"user {self.user_id!r} already has a voice named {name!r}")

    def save(self, name: VoiceName, profile: dict, prompt_text: str, prompt: PromptAudio, overwrite: bool) -> Voice:
        self.ensure_writable(name, overwrite)
        sources = f"{self.user_id}/{VOICE_FOLDER}/sources/{name}"
        self.storage.put(f"{sources}.wav", wav_bytes(prompt.wideband, WIDE_RATE))
        self.storage.put(f"{sources}.txt", prompt_text.encode("utf-8"))
        buffer = io.BytesIO()
        torch.save(profile, buffer)
        self.storage.put(voice_key(self.user_id, name), buffer.getvalue())  # last: a voice appears with its source
        return Voice(name, False, profile)

    def delete(self, name: VoiceName) -> None:
        key = voice_key(self.user_id, name)
        if not self.storage.exists(key):
            raise NotFound("voice", f"user {self.user_id!r} has no voice named {name!r}")
        self.storage.delete(key)  # first: the voice disappears whole, its source after
        sources = f"{self.user_id}/{VOICE_FOLDER}/sources/{name}"
        for suffix in (".wav", ".txt"):
            self.storage.delete(sources + suffix)

    def names(self) -> list[str]:
        folder = f"{self.user_id}/{VOICE_FOLDER}/"
        keys = self.storage.list(folder)
        return sorted(k[len(folder) : -3] for k in keys if k.endswith(".pt") and "/" not in k[len(folder) :])

    def created(self, name: VoiceName) -> float | None:
        return None  # the Storage protocol keeps no times


def read_voice_file(data: bytes, engine: SpeechEngine, param: str) -> dict:
    """A voice file's speaker entry; anything but plain tensors and containers is refused unexecuted."""
    try:
        entry = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the pickle names a function or class to call: refused, never run
            log.warning("refused a voice file that references code")
            raise Invalid(param, "the voice file references code or classes; it was not loaded") from None
        raise Invalid(param, "not a torch voice file (plain tensors and containers)") from None
    except Exception as exc:  # noqa: BLE001 - torch's safe unpickler raises all sorts on malformed input
        raise Invalid(param, f"the voice file is truncated or not a torch file ({type(exc).__name__})") from None
    problem = engine.voice_problem(entry)
    if problem:
        raise Invalid(param, f"the voice file does not fit the {engine.name} engine ({problem})")
    return entry
