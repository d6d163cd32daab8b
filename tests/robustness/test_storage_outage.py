"""Storage is not a single point of failure: built-in voices speak while OSS is down or hanging, a storage outage
is noticed after a few failures and then answered at once (a circuit breaker), and a full disk is a 503 in every
door's shape that /ready reports until space is back."""

import base64
import errno
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.core import breaker
from app.core.breaker import Breaker
from app.core.errors import StorageUnavailable
from tests.support.audio import decode, decode_pcm
from tests.support.doors import clone, error_of
from tests.support.oss_server import OssServer
from tests.support.server import running

AK, SK = "test-ak", "test-sk"
KEY = "k" * 32
TEXT = "The storage is down, and I still speak."


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_in_a_row_and_closes_after_one_success():
    clock = Clock()
    guard = Breaker(failures=3, open_seconds=10, clock=clock)
    for _ in range(2):
        guard.before()
        guard.failed("bucket down")
    guard.before()
    guard.succeeded()  # a success in between: the count starts again
    for _ in range(3):
        guard.before()
        guard.failed("bucket down")
    with pytest.raises(StorageUnavailable, match="bucket down; not tried again for about 10 s"):
        guard.before()
    clock.now += 10
    guard.before()  # half-open: one call tries ...
    with pytest.raises(StorageUnavailable):
        guard.before()  # ... and only one
    guard.failed("still down")
    with pytest.raises(StorageUnavailable, match="still down"):
        guard.before()
    clock.now += 10
    guard.before()
    guard.succeeded()
    guard.before()
    assert not guard.is_open


def test_a_probe_that_ends_without_an_answer_lets_another_try():
    """A probing call that is cancelled (its client left) or ends in a bug proves nothing: the breaker must not
    stay open for good."""
    clock = Clock()
    guard = Breaker(failures=3, open_seconds=10, clock=clock)
    for _ in range(3):
        guard.before()
        guard.failed("down")
    clock.now += 10
    guard.before()
    guard.released()
    guard.before()  # the next call tries
    guard.succeeded()
    assert not guard.is_open


@pytest.fixture
def oss():
    with OssServer(access_key_id=AK, access_key_secret=SK, bucket="learn-wave", region="cn-beijing") as server:
        yield server


@pytest.fixture
def keyed_oss(tmp_path, oss, monkeypatch):
    """A server with API keys and OSS as the storage (1 s per try, one retry), the breaker open for 2 s."""
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SK)
    monkeypatch.setattr(breaker, "OPEN_SECONDS", 2.0)
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    from app.config import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "no-model",
        api_keys_file=keys,
        storage="oss",
        oss_endpoint=oss.endpoint,
        oss_region="cn-beijing",
        storage_timeout_seconds=1.0,
        storage_retries=1,
        max_concurrency=4,
        max_queued=64,
    )
    with running(settings) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client


def _speak_builtins(client) -> None:
    seed = client.post("/tts/pcm", json={"tts_text": TEXT, "spk_id": "中文女"})
    assert seed.status_code == 200, seed.text
    assert decode_pcm(seed.content, 24000).seconds > 1
    openai = client.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": "alloy"})
    assert openai.status_code == 200, openai.text
    assert decode(openai.content).seconds > 1


@pytest.mark.parametrize("outage", ["503", "dropped"])
def test_built_in_voices_speak_while_oss_fails_and_the_breaker_answers_at_once(keyed_oss, oss, male_prompt, outage):
    client = keyed_oss
    assert clone(client, "mine", male_prompt).status_code == 200
    if outage == "503":
        oss.fail_next(10_000, status=503)
    else:  # connections closed without an answer
        oss.drop_next(10_000)
    _speak_builtins(client)  # the user's folder is asked first, fails: the built-in speaks
    own = client.post("/tts", json={"tts_text": TEXT, "spk_id": "mine"})
    assert own.status_code == 503 and error_of(own)["code"] == "storage_unavailable"  # the third failure in a row
    asked = len(oss.requests)
    fast = client.post("/tts", json={"tts_text": TEXT, "spk_id": "mine"})
    assert fast.status_code == 503 and len(oss.requests) == asked  # the breaker answered: OSS was not asked
    assert re.search(r"try again later; not tried again for about \d s$", error_of(fast)["message"])
    _speak_builtins(client)  # at once too
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["storage"] != "ok"

    oss.fail_next(0)  # OSS is back: after the open interval one call tries, and service resumes
    oss.drop_next(0)
    time.sleep(2.1)
    back = client.post("/tts", json={"tts_text": TEXT, "spk_id": "mine"})
    assert back.status_code == 200 and decode(back.content).seconds > 1
    assert client.get("/ready").status_code == 200


def test_a_hanging_bucket_holds_no_request_for_long(keyed_oss, oss):
    client = keyed_oss
    oss.stall_next(10_000, seconds=20.0)
    started = time.monotonic()

    def one(_):
        response = client.post("/tts/pcm", json={"tts_text": "Still here.", "spk_id": "英文女"})
        spoken = decode_pcm(response.content, 24000).seconds if response.status_code == 200 else 0.0
        return (response.status_code, spoken > 0.4), time.monotonic() - started

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(24)))
    assert {status for status, _ in answers} == {(200, True)}  # all spoken
    # the first ones wait for the timeouts (2 tries of 1 s each); the breaker then answers for the storage
    assert max(seconds for _, seconds in answers) < 20, answers
    asked = len(oss.requests)
    after = client.post("/tts/pcm", json={"tts_text": "Still here.", "spk_id": "英文女"})
    assert after.status_code == 200 and len(oss.requests) == asked  # the hanging bucket is not asked again
    oss.stall_next(0)


@pytest.fixture
def keyed_local(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    from app.config import Settings

    settings = Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", api_keys_file=keys)
    with running(settings) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client


def test_a_full_disk_is_a_503_in_every_door_s_shape_and_ready_recovers(keyed_local, tmp_path, monkeypatch, male_prompt):
    client = keyed_local
    assert clone(client, "kept", male_prompt).status_code == 200
    stored = tmp_path / "data" / "storage" / "alice" / "model" / "cosyvoice" / "kept.pt"
    before = stored.read_bytes()
    from app.core import files

    full = threading.Event()
    real_write = files.atomic_write

    def write(path, write_content):  # every file write of the process: the cache's and the storage's
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, write_content)

    monkeypatch.setattr(files, "atomic_write", write)
    full.set()
    seed = clone(client, "kept", male_prompt, overwrite="true")
    assert seed.status_code == 503 and error_of(seed) == {
        "code": "storage_unavailable",
        "message": "storage: the storage folder cannot be written now (No space left on device)",
    }
    sample = {"audio_sample": ("p.wav", male_prompt, "audio/wav")}
    openai = client.post("/v1/audio/voices", data={"name": "other"}, files=sample)
    assert openai.status_code == 503 and openai.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "server_error",
        "param": "storage",
        "code": "storage_unavailable",
    }
    url = "data:audio/wav;base64," + base64.b64encode(male_prompt).decode()
    enroll = {"model": "voice-enrollment", "input": {"action": "create_voice", "target_model": "cosyvoice-v2"}}
    enroll["input"] |= {"prefix": "full", "url": url}
    dashscope = client.post("/api/v1/services/audio/tts/customization", json=enroll)
    assert dashscope.status_code == 503 and set(dashscope.json()) == {"request_id", "code", "message"}
    assert dashscope.json()["code"] == "ServiceUnavailable"
    assert stored.read_bytes() == before  # nothing stored was damaged
    assert not [p for p in stored.parent.rglob("*") if p.name.endswith(".tmp")]
    ready = client.get("/ready")  # reported, and still ready: speech works
    assert ready.status_code == 200 and "No space left on device" in ready.json()["checks"]["saves"]
    for _ in range(4):  # reads go on (no breaker for a local disk), the download cache cannot be written either
        spoken = client.post("/tts/pcm", json={"tts_text": TEXT, "spk_id": "kept"})
        assert spoken.status_code == 200 and decode_pcm(spoken.content, 24000).seconds > 1

    full.clear()  # space again: the next /ready's probe write succeeds, and saves work
    assert client.get("/ready").json()["checks"]["saves"] == "ok"
    assert clone(client, "kept", male_prompt, overwrite="true").status_code == 200


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB file system (tmpfs) for the users' storage, where this machine lets the test mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the injected ENOSPC test covers it")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk(small_disk, tmp_path, male_prompt):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} alice\n")
    from app.config import Settings

    settings = Settings(
        data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", api_keys_file=keys, storage_dir=small_disk
    )
    with running(settings) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        saved, refused = [], None
        for n in range(40):  # a voice and its source take a few hundred KB: the disk fills within these
            answer = clone(client, f"v{n}", male_prompt)
            if answer.status_code != 200:
                refused = answer
                break
            saved.append(f"v{n}")
        assert refused is not None and len(saved) >= 2, saved
        assert refused.status_code == 503 and error_of(refused)["code"] == "storage_unavailable"
        assert "No space left on device" in error_of(refused)["message"]
        assert client.get("/ready").json()["checks"]["saves"].startswith("saving voices fails")
        for name in saved:  # everything saved before is whole and speaks
            spoken = client.post("/tts/pcm", json={"tts_text": "Still whole.", "spk_id": name})
            assert spoken.status_code == 200 and len(spoken.content) > 24000, name
        assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]

        for name in saved[1:]:  # space again
            assert client.delete(f"/v1/audio/voices/{name}").status_code == 200
        assert client.get("/ready").json()["checks"]["saves"] == "ok"
        assert clone(client, "after", male_prompt).status_code == 200
