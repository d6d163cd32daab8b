"""Start-up puts a voice folder right after a crash at any point of a save or a delete."""

import os

import pytest

from app.core.audio import prepare_prompt
from app.core.names import VoiceName
from app.core.voice_recovery import fingerprint, staged_path
from app.core.voices import VoiceLibrary
from app.engines.espeak import EspeakEngine
from tests.support.audio import wav
from tests.support.speech import EN_PROMPT, ENGINE_RATE, spoken


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "voices"


def _library(folder, engine) -> VoiceLibrary:
    return VoiceLibrary(folder, engine)


def _prompt(engine: EspeakEngine, speaker: str):
    prompt = prepare_prompt(wav(spoken(engine, EN_PROMPT, speaker), ENGINE_RATE), "prompt_audio", 1, 30)
    return engine.make_voice(EN_PROMPT, prompt), prompt


def _files(folder) -> list[str]:
    return sorted(p.name for p in (folder / "voice_sources").iterdir())


def test_a_crash_after_the_table_was_written_finishes_the_save(folder, engine, monkeypatch):
    library = _library(folder, engine)
    old, old_prompt = _prompt(engine, "英文男")
    library.save(VoiceName("vera"), old, "old words", old_prompt, overwrite=False)
    new, new_prompt = _prompt(engine, "英文女")

    replace, calls = os.replace, []

    def crash(*args):
        calls.append(args)
        if len(calls) > 3:  # two staged sources and the table were written; then the process dies
            raise KeyboardInterrupt("killed")
        replace(*args)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        library.save(VoiceName("vera"), new, "new words", new_prompt, overwrite=True)
    monkeypatch.undo()
    assert (folder / "voice_sources" / "vera.txt").read_text() == "old words"  # the crash's state: a mismatch

    reopened = _library(folder, engine)
    assert fingerprint(reopened.get(VoiceName("vera")).profile) == fingerprint(new)
    assert (folder / "voice_sources" / "vera.txt").read_text() == "new words"
    assert _files(folder) == ["vera.txt", "vera.wav"]


def test_a_crash_before_the_table_was_written_keeps_the_old_voice_and_source(folder, engine):
    library = _library(folder, engine)
    old, old_prompt = _prompt(engine, "英文男")
    library.save(VoiceName("vera"), old, "old words", old_prompt, overwrite=False)
    new, _ = _prompt(engine, "英文女")
    sources = folder / "voice_sources"
    for suffix, data in ((".wav", b"RIFF new"), (".txt", b"new words")):
        staged_path(sources, "vera", new, suffix).write_bytes(data)  # staged, then killed
    (sources / ".vera.wav.abc123.tmp").write_bytes(b"half a file")
    (folder / ".spk2info.pt.xyz.tmp").write_bytes(b"half a table")

    reopened = _library(folder, engine)
    assert fingerprint(reopened.get(VoiceName("vera")).profile) == fingerprint(old)
    assert (sources / "vera.txt").read_text() == "old words"
    assert _files(folder) == ["vera.txt", "vera.wav"]
    assert not list(folder.glob(".*.tmp"))


def test_a_crash_during_a_delete_removes_the_orphaned_source(folder, engine, monkeypatch):
    library = _library(folder, engine)
    voice, prompt = _prompt(engine, "英文男")
    library.save(VoiceName("gone"), voice, "words", prompt, overwrite=False)
    library.save(VoiceName("kept"), voice, "words", prompt, overwrite=False)

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("pathlib.Path.unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        library.delete(VoiceName("gone"))
    monkeypatch.undo()
    assert "gone.wav" in _files(folder)

    reopened = _library(folder, engine)
    assert reopened.names() == ["kept"]
    assert _files(folder) == ["kept.txt", "kept.wav"]


def test_fingerprints_survive_a_round_trip_through_the_table(folder, engine):
    library = _library(folder, engine)
    voice, prompt = _prompt(engine, "英文男")
    library.save(VoiceName("same"), voice, "words", prompt, overwrite=False)
    assert fingerprint(_library(folder, engine).get(VoiceName("same")).profile) == fingerprint(voice)
    assert os.path.getsize(folder / "spk2info.pt") > 0


def test_a_folder_that_cannot_be_synced_after_the_table_was_replaced_still_saves_whole(folder, engine, monkeypatch):
    """The table's rename is the save's commit: a failing directory fsync after it must not undo the sources."""
    import stat

    library = _library(folder, engine)
    old, old_prompt = _prompt(engine, "英文男")
    library.save(VoiceName("vera"), old, "old words", old_prompt, overwrite=False)
    new, new_prompt = _prompt(engine, "英文女")
    fsync = os.fsync

    def no_directory_sync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_directory_sync)
    library.save(VoiceName("vera"), new, "new words", new_prompt, overwrite=True)
    monkeypatch.undo()
    reopened = _library(folder, engine)
    assert fingerprint(reopened.get(VoiceName("vera")).profile) == fingerprint(new)
    assert (folder / "voice_sources" / "vera.txt").read_text() == "new words"
    assert _files(folder) == ["vera.txt", "vera.wav"]
