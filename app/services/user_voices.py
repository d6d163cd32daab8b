"""Per-user voices and prompts in storage, the seed's layout: ``{user_id}/model/cosyvoice/{name}.pt``.

A voice file holds one speaker entry (the engine's profile: upstream's spk2info format for CosyVoice).
Files are read with ``torch.load(weights_only=True)`` and checked against the running engine before
use; downloads are cached locally by key and ETag in a size-bounded cache, so a replica fetches a
voice once, not on every request. Every user's keys start with their own ``user_id/``: names are
validated (app.names) before they become keys, so no request can reach another user's objects.
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

from app.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from app.names import check_name
from app.services.audio import WIDE_RATE, PromptAudio, wav_bytes
from app.services.engines.base import SpeechEngine
from app.storage import ObjectNotFound, Storage
from app.storage.local import atomic_write_bytes

log = logging.getLogger(__name__)

VOICE_FOLDER = "model/cosyvoice"
MAX_KEY_PARTS = 8


def voice_key(user_id: str, name: str) -> str:
    return f"{check_name('user_id', user_id)}/{VOICE_FOLDER}/{name}.pt"


def user_key(user_id: str, key: str, field: str) -> str:
    """A key inside the user's own prefix; each '/'-separated part must be a valid name."""
    check_name("user_id", user_id)
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidInput(f"{field}: {key!r} is not a storage key (no leading '/', backslash or NUL)")
    parts = key.split("/")
    if parts[0] == user_id and len(parts) > 1:  # given with the user's prefix already
        parts = parts[1:]
    if len(parts) > MAX_KEY_PARTS:
        raise InvalidInput(f"{field}: more than {MAX_KEY_PARTS} levels of folders")
    for part in parts:
        check_name(field, part)
    return "/".join([user_id, *parts])


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
        if len(data) > self.max_bytes:
            return
        with self._lock:
            atomic_write_bytes(self._path(key, etag), data)
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


class UserVoices:
    def __init__(self, storage: Storage, engine: SpeechEngine, cache: DownloadCache, max_bytes: int):
        self.storage = storage
        self._engine = engine
        self._cache = cache
        self._max_bytes = max_bytes

    def fetch(self, key: str, field: str, missing: str) -> bytes:
        """An object's bytes, from the cache when its ETag is unchanged; ``missing`` is the 404 message."""
        try:
            info = self.storage.stat(key)
            if info.size > self._max_bytes:
                raise PayloadTooLarge(f"{field}: the stored object is {info.size} bytes, over the upload limit")
            data = self._cache.get(key, info.etag)
            if data is None:
                data = self.storage.get(key)
                self._cache.put(key, info.etag, data)
        except ObjectNotFound:
            raise NotFound(missing) from None
        return data

    def load(self, user_id: str, name: str, field: str) -> dict:
        check_name(field, name)
        data = self.fetch(voice_key(user_id, name), field, f"{field}: user {user_id!r} has no voice named {name!r}")
        return read_voice_file(data, self._engine, field)

    def ensure_writable(self, user_id: str, name: str, overwrite: bool) -> None:
        if not overwrite and self.storage.exists(voice_key(user_id, name)):
            raise Conflict(f"spk_id: user {user_id!r} already has a voice named {name!r}; send overwrite=true")

    def save(self, user_id: str, name: str, profile: dict, prompt_text: str, prompt: PromptAudio, overwrite: bool):
        check_name("spk_id", name)
        key = voice_key(user_id, name)
        self.ensure_writable(user_id, name, overwrite)
        sources = f"{user_id}/{VOICE_FOLDER}/sources/{name}"
        self.storage.put(f"{sources}.wav", wav_bytes(prompt.wideband, WIDE_RATE))
        self.storage.put(f"{sources}.txt", prompt_text.encode("utf-8"))
        buffer = io.BytesIO()
        torch.save(profile, buffer)
        self.storage.put(key, buffer.getvalue())  # last: the voice appears only once its source is there

    def delete(self, user_id: str, name: str) -> None:
        check_name("spk_id", name)
        key = voice_key(user_id, name)
        if not self.storage.exists(key):
            raise NotFound(f"spk_id: user {user_id!r} has no voice named {name!r}")
        self.storage.delete(key)  # first: the voice disappears whole, its source after
        sources = f"{user_id}/{VOICE_FOLDER}/sources/{name}"
        for suffix in (".wav", ".txt"):
            self.storage.delete(sources + suffix)

    def names(self, user_id: str) -> list[str]:
        folder = f"{check_name('user_id', user_id)}/{VOICE_FOLDER}/"
        keys = self.storage.list(folder)
        return sorted(k[len(folder) : -3] for k in keys if k.endswith(".pt") and "/" not in k[len(folder) :])


def read_voice_file(data: bytes, engine: SpeechEngine, field: str) -> dict:
    """A voice file's speaker entry; anything but plain tensors and containers is refused unexecuted."""
    try:
        entry = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the pickle names a function or class to call: refused, never run
            log.warning("refused a voice file for %s that references code", field)
            raise InvalidInput(f"{field}: the voice file references code or classes; it was not loaded") from None
        raise InvalidInput(f"{field}: not a torch voice file (plain tensors and containers)") from None
    except Exception as exc:  # noqa: BLE001 - torch's safe unpickler raises all sorts on malformed input
        raise InvalidInput(f"{field}: the voice file is truncated or not a torch file ({type(exc).__name__})") from None
    problem = engine.voice_problem(entry)
    if problem:
        raise InvalidInput(f"{field}: the voice file does not fit the {engine.name} engine ({problem})")
    return entry
