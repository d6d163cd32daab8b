"""Per-user local storage is swept at start-up as the shared library is: the temp files of writes a crash
interrupted, and the sources of voices whose file was never written; a write another process is making is left."""

import os
import subprocess
import sys
import time

from app.config import Settings
from app.core import files
from tests.support.doors import clone
from tests.support.server import running
from tests.support.speech import ENGINE_RATE

KEY = "k" * 32


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _aged(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_start_up_sweeps_interrupted_writes_and_orphaned_sources(tmp_path, male_prompt):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    settings = Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", api_keys_file=keys)
    with running(settings) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        assert clone(client, "kept", male_prompt).status_code == 200
    folder = tmp_path / "data" / "storage" / "alice" / "model" / "cosyvoice"
    kept = (folder / "kept.pt").read_bytes()
    host, dead = files._HOST, _dead_pid()
    crashed = folder / f".lost.pt.{host}-{dead}-abc123.a1b2c3.tmp"  # its writer is gone
    just_now = folder / f".new.pt.{host}-{dead}-abc123.b1b2c3.tmp"  # so it seems, but a host name may be shared
    running_now = folder / f".busy.pt.{host}-{os.getppid()}-def456.d4e5f6.tmp"  # a live process is writing it
    ancient = folder / ".old.pt.x1y2z3.tmp"  # unnamed writer, a day old
    for path in (crashed, just_now, running_now, ancient):
        path.write_bytes(b"half a voice")
    for path in (crashed, running_now):
        _aged(path, 120)
    _aged(ancient, 86400)
    orphan = [folder / "sources" / f"gone.{suffix}" for suffix in ("wav", "txt")]  # the voice file never came
    fresh = [folder / "sources" / f"saving.{suffix}" for suffix in ("wav", "txt")]  # a save in progress elsewhere
    for path in (*orphan, *fresh):
        path.write_bytes(b"source")
    for path in orphan:
        _aged(path, 600)

    with running(settings) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        spoken = client.post("/tts/pcm", json={"tts_text": "Still mine.", "spk_id": "kept"})
        assert spoken.status_code == 200 and len(spoken.content) > ENGINE_RATE
        assert client.get("/get_available_spks").json()["cloned"] == ["kept"]
    assert not crashed.exists() and not ancient.exists() and running_now.exists() and just_now.exists()
    assert not any(path.exists() for path in orphan) and all(path.exists() for path in fresh)
    assert (folder / "kept.pt").read_bytes() == kept
    assert (folder / "sources" / "kept.wav").exists() and (folder / "sources" / "kept.txt").exists()
