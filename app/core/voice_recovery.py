"""What a crash can leave in a voice folder, and how start-up puts it right.

A save stages the voice's sources as ``.{id}.{fingerprint}{suffix}.new``, then writes the table, then moves the
staged files into place. The fingerprint is the new profile's: at start-up a staged file whose fingerprint
matches the table's entry belongs to a saved voice and is moved into place (roll forward); any other is dropped
(the table still holds the old voice, whose source was never touched). Sources of voices no longer in the table
(a crash during a delete) and temp files of interrupted atomic writes are removed.

When the new profile equals the old one (coarse profiles can), a staged file is rolled forward even if the crash
came before the table was written; the result is still one of the two states a save may leave: the new voice
(which is the old profile) with the new voice's source.
"""

import hashlib
import logging
import os
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE_SUFFIXES = (".wav", ".txt")
_STAGED = re.compile(r"\.(?P<id>.+)\.(?P<fp>[0-9a-f]{16})(?P<suffix>\.wav|\.txt)\.new")
_TEMP = re.compile(r"\..+\.tmp")  # app.core.files.atomic_write's temp files


def fingerprint(entry: object) -> str:
    """A hash of a voice profile's content (tensors by dtype, shape and bytes), stable across save and load."""
    digest = hashlib.sha256()

    def feed(value: object) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(f"K{key!s}".encode())
                feed(value[key])
        elif isinstance(value, list | tuple):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(f"V{value!r}".encode())

    feed(entry)
    return digest.hexdigest()[:16]


def staged_path(sources: Path, spk_id: str, entry: object, suffix: str) -> Path:
    return sources / f".{spk_id}.{fingerprint(entry)}{suffix}.new"


def recover(directory: Path, sources: Path, entries: dict) -> None:
    """Finish or undo what a crash interrupted (the caller holds the folder's lock)."""
    for folder in (directory, sources):
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            if _TEMP.fullmatch(path.name):
                _remove(path, "an interrupted write")
    if not sources.is_dir():
        return
    fingerprints: dict[str, str] = {}
    for path in sources.iterdir():
        staged = _STAGED.fullmatch(path.name)
        if staged:
            spk_id = staged["id"]
            if spk_id in entries and spk_id not in fingerprints:
                fingerprints[spk_id] = fingerprint(entries[spk_id])
            if fingerprints.get(spk_id) == staged["fp"]:
                os.replace(path, sources / f"{spk_id}{staged['suffix']}")
                log.warning("voice %r: finished moving its source into place after a crash", spk_id)
            else:
                _remove(path, f"the staged source of an unsaved change to voice {spk_id!r}")
        elif path.suffix in SOURCE_SUFFIXES and not path.name.startswith(".") and path.stem not in entries:
            _remove(path, f"the source of deleted voice {path.stem!r}")


def _remove(path: Path, what: str) -> None:
    log.warning("removing %s: %s", what, path)
    path.unlink(missing_ok=True)
