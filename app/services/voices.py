"""VoiceLibrary: the speaker table persisted in ``spk2info.pt``, and each voice's source.

The file is one ``torch.save``'d dict ``{spk_id: profile}`` (upstream CosyVoice's layout), read
with ``weights_only=True`` only. Every change is a read-modify-write under a thread lock and an
advisory file lock, re-reading the file first, so several workers or processes sharing the folder
never lose each other's voices. Each cloned voice keeps its source (the prepared 16 kHz prompt and
its transcript) in ``voice_sources/`` so it can be rebuilt for another engine later.
"""

import fcntl
import io
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.errors import Conflict, Forbidden, NotFound
from app.names import check_name
from app.services.audio import PROMPT_RATE, wav_bytes
from app.services.engines.base import SpeechEngine
from app.storage.local import atomic_write_bytes

log = logging.getLogger(__name__)

SPK2INFO = "spk2info.pt"


class VoiceFileError(RuntimeError):
    """spk2info.pt exists but cannot be read safely; we refuse to overwrite it."""


@dataclass(frozen=True)
class Voice:
    spk_id: str
    builtin: bool
    profile: dict | None  # None for an engine's own built-in speaker


class VoiceLibrary:
    def __init__(self, directory: Path, engine: SpeechEngine):
        self.directory = directory
        self.file = directory / SPK2INFO
        self.sources = directory / "voice_sources"
        self._engine = engine
        self._builtins = engine.builtin_speakers()
        self._lock = threading.Lock()
        self._entries: dict = {}
        self._stamp: tuple | None = None
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._reload_if_changed()

    # -- reading --------------------------------------------------------------------------
    def builtin_ids(self) -> list[str]:
        return list(self._builtins)

    def cloned_ids(self) -> list[str]:
        with self._lock:
            self._reload_if_changed()
            return [k for k in self._entries if k not in self._builtins and self._usable(k)]

    def get(self, spk_id: str, field: str = "spk_id") -> Voice:
        check_name(field, spk_id)
        with self._lock:
            self._reload_if_changed()
            entry = self._entries.get(spk_id)
        if spk_id in self._builtins:
            return Voice(spk_id, True, _copy(entry) if isinstance(entry, dict) else None)
        if entry is None:
            raise NotFound(f"{field}: no voice named {spk_id!r}; GET /get_available_spks lists them")
        problem = self._engine.voice_problem(entry)
        if problem:
            raise Conflict(f"{field}: voice {spk_id!r} cannot be used by the {self._engine.name} engine ({problem})")
        return Voice(spk_id, False, _copy(entry))

    def exists(self, spk_id: str) -> bool:
        with self._lock:
            self._reload_if_changed()
            return spk_id in self._entries or spk_id in self._builtins

    # -- writing --------------------------------------------------------------------------
    def add(self, spk_id: str, profile: dict, prompt_text: str, prompt_16k: np.ndarray, overwrite: bool) -> Voice:
        check_name("spk_id", spk_id)
        self.ensure_writable(spk_id, overwrite)
        with self._locked_for_change():
            self.ensure_writable(spk_id, overwrite, reload=False)
            atomic_write_bytes(self.sources / f"{spk_id}.wav", wav_bytes(prompt_16k, PROMPT_RATE))
            atomic_write_bytes(self.sources / f"{spk_id}.txt", prompt_text.encode("utf-8"))
            entries = dict(self._entries)
            entries[spk_id] = profile
            self._save(entries)
        return Voice(spk_id, False, _copy(profile))

    def delete(self, spk_id: str) -> None:
        check_name("spk_id", spk_id)
        if spk_id in self._builtins:
            raise Forbidden(f"spk_id: {spk_id!r} is a built-in speaker and cannot be deleted")
        with self._locked_for_change():
            if spk_id not in self._entries:
                raise NotFound(f"spk_id: no voice named {spk_id!r}")
            entries = {k: v for k, v in self._entries.items() if k != spk_id}
            self._save(entries)
            for suffix in (".wav", ".txt"):
                (self.sources / f"{spk_id}{suffix}").unlink(missing_ok=True)

    def ensure_writable(self, spk_id: str, overwrite: bool, reload: bool = True) -> None:
        if spk_id in self._builtins:
            raise Forbidden(f"spk_id: {spk_id!r} is a built-in speaker and cannot be overwritten")
        if reload:
            with self._lock:
                self._reload_if_changed()
        if spk_id in self._entries and not overwrite:
            raise Conflict(f"spk_id: a voice named {spk_id!r} already exists; send overwrite=true to replace it")

    # -- internals ------------------------------------------------------------------------
    def _usable(self, spk_id: str) -> bool:
        return self._engine.voice_problem(self._entries[spk_id]) is None

    @contextmanager
    def _locked_for_change(self):
        with self._lock, open(self.directory / f".{SPK2INFO}.lock", "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                self._reload_if_changed()
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _save(self, entries: dict) -> None:
        buffer = io.BytesIO()
        torch.save(entries, buffer)
        atomic_write_bytes(self.file, buffer.getvalue())
        self._entries = entries
        self._stamp = _stamp(self.file)

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self.file)
        if stamp == self._stamp:
            return
        self._entries = _read(self.file) if stamp else {}
        self._stamp = stamp
        for spk_id, entry in self._entries.items():
            problem = self._engine.voice_problem(entry) if spk_id not in self._builtins else None
            if problem:
                log.warning("voice %r in %s is kept but not served: %s", spk_id, self.file, problem)


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: Path) -> dict:
    try:
        entries = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear refusal
        raise VoiceFileError(f"{path} cannot be read safely ({exc}); move it aside to start fresh") from exc
    if not isinstance(entries, dict) or not all(isinstance(k, str) for k in entries):
        raise VoiceFileError(f"{path} is not a speaker table (a dict of voice names)")
    return entries


def _copy(entry: dict) -> dict:
    """A deep copy: callers may mutate what they get (upstream's frontend does)."""
    return {
        k: (v.clone() if isinstance(v, torch.Tensor) else _copy(v) if isinstance(v, dict) else v)
        for k, v in entry.items()
    }
