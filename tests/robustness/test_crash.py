"""A real server killed with SIGKILL during concurrent clones keeps every acknowledged voice, with its source."""

import base64
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port
from tests.support.processes import start_server
from tests.support.speech import EN_PROMPT

ROUNDS = 6
CLIENTS = 4
NAMES = [f"v{i}" for i in range(6)]  # few names: most clones overwrite a voice another client saved


KEY = "k" * 32


def _start(data_dir: Path, port: int, keys: Path | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "COSYVOICE_ENGINE": "espeak",
        "COSYVOICE_DATA_DIR": str(data_dir),
        "COSYVOICE_MAX_CONCURRENCY": "4",
        "COSYVOICE_LOG_LEVEL": "WARNING",
        **({"COSYVOICE_API_KEYS_FILE": str(keys)} if keys else {}),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
    return start_server(command, env, port, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _clone_until_killed(url: str, prompt: bytes, acked: dict, sent: dict, seed: int, errors: list) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for i in range(1000):
            name, transcript = rng.choice(NAMES), f"{EN_PROMPT} (client {seed} clone {i})"
            sent.setdefault(name, set()).add(transcript)
            files = {"prompt_audio": ("p.wav", prompt, "audio/wav")}
            data = {"spk_id": name, "prompt_text": transcript, "overwrite": "true"}
            try:
                response = client.post(f"{url}/clone", data=data, files=files)
            except httpx.TransportError:
                return  # killed
            if response.status_code != 200:
                errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                return
            acked[name] = (time.monotonic(), transcript)


def test_sigkill_during_concurrent_clones_loses_nothing(tmp_path, male_prompt):
    data_dir, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    rng = random.Random(7)
    acked: dict[str, tuple[float, str]] = {}  # name -> (when, transcript) of the last acknowledged clone
    sent: dict[str, set[str]] = {}  # every transcript sent per name (a clone in flight may have landed)
    errors: list[str] = []  # answers other than 200 while the server was up
    for round_ in range(ROUNDS):
        server = _start(data_dir, port)
        _check(url, data_dir, acked, sent)
        clients = [
            threading.Thread(target=_clone_until_killed, args=(url, male_prompt, acked, sent, round_ * 10 + c, errors))
            for c in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        time.sleep(rng.uniform(0.3, 2.0))
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        for client in clients:
            client.join(30)
    server = _start(data_dir, port)
    try:
        _check(url, data_dir, acked, sent)
        assert len(acked) >= 3, "too few clones were acknowledged for the test to mean anything"
        assert not errors, errors
    finally:
        server.terminate()
        server.wait(10)


def _check(url: str, data_dir: Path, acked: dict, sent: dict) -> None:
    health = httpx.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok", health
    listed = set(httpx.get(f"{url}/get_available_spks", timeout=10).json()["cloned"])
    assert set(acked) <= listed, f"acknowledged voices lost: {set(acked) - listed}"
    folder = data_dir / "espeak"
    sources = folder / "voice_sources"
    for name in listed:
        transcript = (sources / f"{name}.txt").read_text()  # every listed voice has its source
        assert (sources / f"{name}.wav").stat().st_size > 44
        assert transcript in sent[name], (name, transcript)
    kept = list(sources.iterdir()) if sources.is_dir() else []
    stray = [p.name for p in [*folder.iterdir(), *kept] if p.name.endswith((".tmp", ".new"))]
    assert not stray, stray
    assert sorted(p.name for p in kept) == sorted(f"{n}{s}" for n in listed for s in (".txt", ".wav"))


def _create_on_every_door_until_killed(url: str, prompt: bytes, acked: dict, sent: dict, seed: int, errors: list):
    """Voices made in turn through the seed's /clone, OpenAI's voice creation and DashScope's enrollment."""
    sample = "data:audio/wav;base64," + base64.b64encode(prompt).decode()
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for i in range(1000):
            transcript = f"{EN_PROMPT} (client {seed} voice {i})"
            door = ("seed", "openai", "dashscope")[(seed + i) % 3]  # each client starts at another door
            try:
                if door == "seed":
                    name = NAMES[(seed + i) % len(NAMES)]
                    sent.setdefault(name, set()).add(transcript)  # before: a clone in flight may land
                    data = {"spk_id": name, "prompt_text": transcript, "overwrite": "true"}
                    response = client.post(f"{url}/clone", data=data, files={"prompt_audio": ("p.wav", prompt)})
                elif door == "openai":
                    name = f"o{seed}x{i}"
                    sent.setdefault(name, set()).add(transcript)
                    data = {"name": name, "script_hint": transcript}
                    response = client.post(
                        f"{url}/v1/audio/voices", data=data, files={"audio_sample": ("p.wav", prompt)}
                    )
                else:
                    body = {"model": "voice-enrollment", "input": {"action": "create_voice", "prefix": f"d{seed}"}}
                    body["input"] |= {"target_model": "cosyvoice-v2", "url": sample, "prompt_text": transcript}
                    sent.setdefault(f"d{seed}", set()).add(transcript)  # its id comes with the answer, if any
                    sent_at = "/api/v1/services/audio/tts/customization"
                    response = client.post(f"{url}{sent_at}", json=body)
                    name = response.json().get("output", {}).get("voice_id", "") if response.status_code == 200 else ""
            except httpx.TransportError:
                return  # killed
            if response.status_code != 200:
                errors.append(f"{door}: {response.status_code} {response.text[:200]}")
                return
            sent.setdefault(name, set()).add(transcript)  # an enrollment's id is known from here
            acked[name] = (time.monotonic(), transcript)


def _door_of(name: str) -> str:
    return "openai" if name.startswith("o") else "dashscope" if name.startswith("cosyvoice") else "seed"


def test_sigkill_during_concurrent_keyed_clones_leaves_nothing_behind(tmp_path, male_prompt):
    """With API keys the voices live in the user's storage folder: the same promise, through the seed's, OpenAI's
    and DashScope's ways of making a voice, and start-up sweeps what the crashes left there (a minute later)."""
    data_dir, port, keys = tmp_path / "data", free_port(), tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    url, acked, sent, errors = f"http://127.0.0.1:{port}", {}, {}, []
    folder = data_dir / "storage" / "alice" / "model" / "cosyvoice"
    for round_ in range(3):
        server = _start(data_dir, port, keys)
        clients = [
            threading.Thread(
                target=_create_on_every_door_until_killed,
                args=(url, male_prompt, acked, sent, round_ * 10 + c, errors),
            )
            for c in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        time.sleep(0.5 + round_ * 0.4)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        for client in clients:
            client.join(30)
    for path in folder.rglob("*"):  # a minute later
        then = time.time() - 120
        os.utime(path, (then, then))
    server = _start(data_dir, port, keys)
    try:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
            listed = set(client.get(f"{url}/get_available_spks").json()["cloned"])
            assert set(acked) <= listed, (acked, listed)
            made_by = {_door_of(name) for name in acked}
            assert made_by == {"seed", "openai", "dashscope"}, sorted(acked)
            for name in listed:
                spoken = client.post(f"{url}/tts/pcm", json={"tts_text": "Hello there.", "spk_id": name})
                assert spoken.status_code == 200 and len(spoken.content) > 2 * 24000 * 0.3, name  # 0.3 s of audio
        assert not errors, errors
        left = sorted(p.name for p in folder.rglob("*") if p.is_file())
        expected = sorted([f"{n}.pt" for n in listed] + [f"{n}{s}" for n in listed for s in (".txt", ".wav")])
        assert left == expected  # no temp file, no source without its voice
        for name in listed:  # an enrollment whose answer the kill cut off: one of its prefix's transcripts
            made = sent.get(name) or sent[name.split("-")[2]]
            assert (folder / "sources" / f"{name}.txt").read_text() in made
    finally:
        server.terminate()
        server.wait(10)
