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

import torch

from app.core.audio import WIDE_RATE, PromptAudio, wav_bytes
from app.core.engine import SpeechEngine
from app.core.errors import AlreadyExists, Forbidden, Invalid, NotFound, VoiceTableUnavailable
from app.core.files import atomic_write_bytes
from app.core.names import VoiceName
from app.core.voice_recovery import recover, staged_path

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
        self._unreadable: str | None = None  # why the file on disk cannot be read right now
        directory.mkdir(parents=True, exist_ok=True)
        self._entries = _read(self.file) if self.file.exists() else {}  # unreadable: refuse to start
        self._stamp = _stamp(self.file)
        try:
            with self._locked_for_change():  # another process sharing the folder may be mid-save: wait for it
                recover(directory, self.sources, self._entries)
        except OSError as exc:  # a read-only model folder: served as it is, and changes fail when tried
            log.warning("cannot check %s for what a crash left (%s)", directory, exc)
        self._warn_unusable()

    # -- reading --------------------------------------------------------------------------
    def builtin_ids(self) -> list[str]:
        return list(self._builtins)

    def names(self) -> list[str]:
        """The cloned voices (the built-ins are in ``builtin_ids``)."""
        with self._lock:
            self._reload_if_changed()
            return [k for k in self._entries if k not in self._builtins and self._usable(k)]

    def known_count(self) -> int:
        """How many cloned voices the table held when last read: no disk access, for liveness probes."""
        entries = self._entries
        return sum(1 for k in entries if k not in self._builtins and self._engine.voice_problem(entries[k]) is None)

    def get(self, spk_id: VoiceName) -> Voice:
        with self._lock:
            self._reload_if_changed()
            entry = self._entries.get(spk_id)
        if spk_id in self._builtins:
            usable = isinstance(entry, dict) and self._engine.voice_problem(entry) is None
            return Voice(spk_id, True, _copy(entry) if usable else None)
        if entry is None:
            raise NotFound("voice", f"no voice named {spk_id!r}")
        problem = self._engine.voice_problem(entry)
        if problem:
            raise Invalid("voice", f"voice {spk_id!r} cannot be used by the {self._engine.name} engine ({problem})")
        return Voice(spk_id, False, _copy(entry))

    def created(self, spk_id: VoiceName) -> float | None:
        """When the voice was saved (its source's time), or None for a built-in speaker."""
        try:
            return (self.sources / f"{spk_id}.wav").stat().st_mtime
        except FileNotFoundError:
            return None

    @property
    def problem(self) -> str | None:
        """Why the voice table on disk is unreadable (the last good one is served meanwhile)."""
        return self._unreadable

    # -- writing --------------------------------------------------------------------------
    def save(self, spk_id: VoiceName, profile: dict, prompt_text: str, prompt: PromptAudio, overwrite: bool) -> Voice:
        self.ensure_writable(spk_id, overwrite)
        sources = {".wav": wav_bytes(prompt.wideband, WIDE_RATE), ".txt": prompt_text.encode("utf-8")}
        with self._locked_for_change():
            self.ensure_writable(spk_id, overwrite, reload=False)
            # sources go to staging names first: a failed save leaves the old voice and its source intact
            staged = {}
            try:
                for suffix, data in sources.items():
                    staged[suffix] = staged_path(self.sources, spk_id, profile, suffix)
                    atomic_write_bytes(staged[suffix], data)
                self._save({**self._entries, str(spk_id): profile})  # a plain str: the file is read weights_only
            except BaseException as exc:
                for path in staged.values():
                    path.unlink(missing_ok=True)
                if isinstance(exc, OSError):
                    raise VoiceTableUnavailable("name", f"voice {spk_id!r} could not be saved ({exc})") from exc
                raise
            for suffix, path in staged.items():
                os.replace(path, self.sources / f"{spk_id}{suffix}")
        return Voice(spk_id, False, _copy(profile))

    def delete(self, spk_id: VoiceName) -> None:
        if spk_id in self._builtins:
            raise Forbidden("voice", f"{spk_id!r} is a built-in speaker and cannot be deleted")
        with self._locked_for_change():
            if spk_id not in self._entries:
                raise NotFound("voice", f"no voice named {spk_id!r}")
            entries = {k: v for k, v in self._entries.items() if k != spk_id}
            self._save(entries)  # first: the voice disappears whole; a crash before the unlinks leaves
            # sources of no voice, which start-up removes
            for suffix in (".wav", ".txt"):
                (self.sources / f"{spk_id}{suffix}").unlink(missing_ok=True)

    def ensure_writable(self, spk_id: VoiceName, overwrite: bool, reload: bool = True) -> None:
        if spk_id in self._builtins:
            raise Forbidden("name", f"{spk_id!r} is a built-in speaker and cannot be overwritten")
        if reload:
            with self._lock:
                self._reload_if_changed()
        if spk_id in self._entries and not overwrite:
            raise AlreadyExists("name", f"a voice named {spk_id!r} already exists")

    # -- internals ------------------------------------------------------------------------
    def _usable(self, spk_id: str) -> bool:
        return self._engine.voice_problem(self._entries[spk_id]) is None

    @contextmanager
    def _locked_for_change(self):
        """The file lock (other processes) first, then the thread lock: readers here never wait on others."""
        try:
            lock_file = open(self.directory / f".{SPK2INFO}.lock", "a+b")  # noqa: SIM115 - closed by the with below
        except OSError as exc:  # e.g. a model folder mounted read-only: its voices are served, not changed
            problem = f"voices cannot be changed: {self.directory} is not writable ({exc.strerror or exc})"
            raise VoiceTableUnavailable(None, problem) from None
        with lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                with self._lock:
                    self._reload_if_changed()
                    if self._unreadable:
                        raise VoiceTableUnavailable(None, f"voices cannot be changed now: {self._unreadable}")
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
        try:
            self._entries = _read(self.file) if stamp else {}
        except VoiceFileError as exc:  # e.g. a non-atomic writer mid-way: keep serving the last good table
            if self._unreadable != str(exc):
                log.error("%s; serving the last good voice table and refusing changes", exc)
            self._unreadable = str(exc)
            return
        self._unreadable = None
        self._stamp = stamp
        self._warn_unusable()

    def _warn_unusable(self) -> None:
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
