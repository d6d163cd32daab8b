"""The voice library: cloning, persistence across restarts, conflicts, built-ins, concurrency."""

import concurrent.futures
import io
import wave

import httpx
import torch

from app.core.audio import WIDE_RATE
from tests.support.audio import decode
from tests.support.doors import clone, error_of
from tests.support.server import live_server, running
from tests.support.speech import EN_PROMPT

TEXT = "Good evening. This voice was cloned a moment ago."


def test_clone_describes_the_saved_voice(client, female_prompt):
    response = clone(client, "alice", female_prompt)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["spk_id"] == "alice"
    voice = body["voice"]
    assert voice["engine"] == "espeak" and voice["builtin"] is False
    assert voice["variant"] == "female"
    assert 180 < voice["measured"]["median_f0_hz"] < 260
    assert client.get("/voices/alice").json()["pitch"] == voice["pitch"]


def test_voice_survives_restart_in_spk2info_with_its_source(settings, male_prompt):
    with running(settings) as client:
        assert clone(client, "bob", male_prompt).status_code == 200
        before = decode(client.post("/tts", json={"tts_text": TEXT, "spk_id": "bob"}).content)
    voices_dir = settings.data_dir / "espeak"
    table = torch.load(voices_dir / "spk2info.pt", weights_only=True)
    assert set(table) == {"bob"} and table["bob"]["engine"] == "espeak"
    assert (voices_dir / "voice_sources" / "bob.txt").read_text() == EN_PROMPT
    with wave.open(io.BytesIO((voices_dir / "voice_sources" / "bob.wav").read_bytes())) as source:
        assert source.getframerate() == WIDE_RATE and source.getnchannels() == 1
        assert source.getnframes() > 3 * WIDE_RATE
    with running(settings) as client:
        assert "bob" in client.get("/get_available_spks").json()["cloned"]
        after = decode(client.post("/tts", json={"tts_text": TEXT, "spk_id": "bob"}).content)
    assert after.samples.size == before.samples.size and (after.samples == before.samples).all()


def test_reusing_a_spk_id_needs_overwrite(client, male_prompt, female_prompt):
    clone(client, "carol", male_prompt)
    response = clone(client, "carol", female_prompt)
    assert response.status_code == 409
    assert error_of(response)["message"].startswith("spk_id:")
    assert client.get("/voices/carol").json()["variant"] == "male"  # untouched
    response = clone(client, "carol", female_prompt, overwrite="true")
    assert response.status_code == 200
    assert client.get("/voices/carol").json()["variant"] == "female"


def test_builtin_speakers_cannot_be_overwritten_or_deleted(client, male_prompt):
    response = clone(client, "中文女", male_prompt, overwrite="true")
    assert response.status_code == 403
    assert "built-in" in error_of(response)["message"]
    assert client.delete("/voices/中文女").status_code == 403
    assert "中文女" in client.get("/get_available_spks").json()["builtin"]


def test_delete_removes_voice_and_source(settings, client, male_prompt):
    clone(client, "dave", male_prompt)
    assert client.delete("/voices/dave").status_code == 200
    assert client.get("/voices/dave").status_code == 404
    assert not (settings.data_dir / "espeak" / "voice_sources" / "dave.wav").exists()
    assert client.delete("/voices/dave").status_code == 404


def test_twenty_concurrent_clones_all_survive_restart(settings, male_prompt, female_prompt):
    names = [f"voice_{i:02d}" for i in range(20)]
    with live_server(settings) as (url, _app):

        def post(i_name):
            i, name = i_name
            prompt = male_prompt if i % 2 else female_prompt
            files = {"prompt_audio": ("p.wav", prompt, "audio/wav")}
            data = {"spk_id": name, "prompt_text": EN_PROMPT}
            return httpx.post(f"{url}/clone", data=data, files=files, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(post, enumerate(names)))
    assert statuses == [200] * 20
    with running(settings) as client:
        listed = client.get("/get_available_spks").json()["cloned"]
        assert sorted(listed) == names
        variants = {name: client.get(f"/voices/{name}").json()["variant"] for name in names}
    assert [variants[n] for n in names] == ["female" if i % 2 == 0 else "male" for i in range(20)]
    assert not list((settings.data_dir / "espeak").glob(".*.tmp"))


def test_two_libraries_on_one_folder_never_lose_each_others_voices(settings, male_prompt, female_prompt):
    """Two workers (two apps) sharing the data dir: each sees and keeps the other's voices."""
    with running(settings) as first, running(settings) as second:
        clone(first, "from_first", male_prompt)
        clone(second, "from_second", female_prompt)
        assert set(first.get("/get_available_spks").json()["cloned"]) == {"from_first", "from_second"}
    table = torch.load(settings.data_dir / "espeak" / "spk2info.pt", weights_only=True)
    assert set(table) == {"from_first", "from_second"}


def test_unusable_entries_are_kept_but_not_served(settings, male_prompt):
    voices_dir = settings.data_dir / "espeak"
    voices_dir.mkdir(parents=True)
    torch.save({"foreign": {"embedding": torch.zeros(192)}}, voices_dir / "spk2info.pt")
    with running(settings) as client:
        assert client.get("/get_available_spks").json()["cloned"] == []
        response = client.post("/tts", json={"tts_text": TEXT, "spk_id": "foreign"})
        assert response.status_code == 422 and "cannot be used by the espeak engine" in error_of(response)["message"]
        clone(client, "mine", male_prompt)
    assert set(torch.load(voices_dir / "spk2info.pt", weights_only=True)) == {"foreign", "mine"}


def test_a_corrupt_voice_table_is_never_overwritten(settings):
    voices_dir = settings.data_dir / "espeak"
    voices_dir.mkdir(parents=True)
    (voices_dir / "spk2info.pt").write_bytes(b"not a torch file")
    try:
        with running(settings):
            raise AssertionError("the app must refuse to start on an unreadable voice table")
    except RuntimeError as exc:
        assert "spk2info.pt" in str(exc)
    assert (voices_dir / "spk2info.pt").read_bytes() == b"not a torch file"


def test_a_table_broken_while_running_keeps_serving_and_refuses_changes(settings, client, male_prompt):
    clone(client, "kept", male_prompt)
    table = settings.data_dir / "espeak" / "spk2info.pt"
    table.write_bytes(b"half-written garbage")  # e.g. a non-atomic writer caught mid-way
    ready = client.get("/ready")  # reads the table again; /health reports what the last read found
    assert ready.status_code == 503 and "spk2info.pt" in ready.json()["checks"]["voice_table"]
    health = client.get("/health").json()
    assert health["status"] == "degraded" and "spk2info.pt" in health["problem"]
    assert decode(client.post("/tts", json={"tts_text": TEXT, "spk_id": "kept"}).content).seconds > 1
    assert decode(client.post("/tts", json={"tts_text": TEXT, "spk_id": "英文男"}).content).seconds > 1
    response = clone(client, "new", male_prompt)
    assert response.status_code == 503 and error_of(response)["code"] == "voice_table_unavailable"
    assert table.read_bytes() == b"half-written garbage"  # never overwritten
    torch.save({"kept": client.get("/voices/kept").json() | {"engine": "espeak"}}, table)
    assert client.get("/ready").status_code == 200 and client.get("/health").json()["status"] == "ok"
    assert clone(client, "new", male_prompt).status_code == 200


def test_a_foreign_entry_named_like_a_builtin_does_not_break_it(settings, male_prompt):
    voices_dir = settings.data_dir / "espeak"
    voices_dir.mkdir(parents=True)
    torch.save({"中文女": {"embedding": torch.zeros(192)}}, voices_dir / "spk2info.pt")
    with running(settings) as client:
        response = client.post("/tts", json={"tts_text": "你好，世界。", "spk_id": "中文女"})
        assert decode(response.content).seconds > 0.5


def test_a_failed_overwrite_leaves_the_old_voice_and_source(settings, client, male_prompt, female_prompt, monkeypatch):
    clone(client, "erin", male_prompt, text="the old transcript")
    sources = settings.data_dir / "espeak" / "voice_sources"
    old_wav = (sources / "erin.wav").read_bytes()
    library = client.app.state.speech.voices.library

    def disk_full(_entries):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(library, "_save", disk_full)
    response = clone(client, "erin", female_prompt, overwrite="true")
    assert response.status_code == 503 and "No space left" in error_of(response)["message"]
    monkeypatch.undo()
    assert client.get("/voices/erin").json()["variant"] == "male"
    assert (sources / "erin.wav").read_bytes() == old_wav
    assert (sources / "erin.txt").read_text() == "the old transcript"
    assert sorted(p.name for p in sources.iterdir()) == ["erin.txt", "erin.wav"]


def test_a_voice_folder_that_cannot_be_written_refuses_changes_with_a_503(settings, client, male_prompt):
    """E.g. a model folder mounted read-only (the container's /models): served, but not changed; never a 500."""
    lock = settings.data_dir / "espeak" / ".spk2info.pt.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # opening it for writing fails as a read-only folder would (root ignores permissions)
    response = clone(client, "new", male_prompt)
    assert response.status_code == 503 and error_of(response)["code"] == "voice_table_unavailable"
    assert "is not writable" in error_of(response)["message"]
    assert decode(client.post("/tts", json={"tts_text": TEXT, "spk_id": "英文男"}).content).seconds > 1
