"""Cloning on the embedded engine reproduces what it can measure: pitch, pitch range, speaking rate."""

import numpy as np
import pytest

from app.core import prosody
from tests.support.audio import decode, tone, wav
from tests.support.doors import clone
from tests.support.speech import EN_PROMPT, ENGINE_RATE, spoken

TEXT = "Please read this sentence aloud, slowly and clearly, for everyone in the room."


def synthesize(client, spk_id: str):
    response = client.post("/tts", json={"tts_text": TEXT, "spk_id": spk_id})
    assert response.status_code == 200, response.text
    return decode(response.content)


def test_pitch_tracker_finds_known_pitches():
    for f0 in (80, 120, 200, 310, 450):
        assert abs(np.median(prosody.pitch_track(tone(2.0, f0=f0), 16000)) - f0) < 0.02 * f0


def test_syllable_counting():
    assert prosody.count_syllables("你好世界") == 4
    assert prosody.count_syllables("Hello beautiful world") == 2 + 3 + 1
    assert prosody.count_syllables("") == 0


@pytest.mark.parametrize("f0", [95.0, 140.0, 210.0, 290.0])
def test_clone_reproduces_the_prompt_median_pitch(client, f0):
    # a synthetic voiced prompt at a known pitch; the clone must speak at about that pitch
    assert (
        clone(client, f"p{int(f0)}", wav(tone(4.0, f0=f0), 16000), text="one two three four five six").status_code
        == 200
    )
    measured = synthesize(client, f"p{int(f0)}").median_f0()
    assert abs(np.log2(measured / f0)) < 0.2, (f0, measured)  # within ~2.4 semitones


def test_clone_of_real_speech_keeps_the_speakers_pitch(client, male_prompt, female_prompt):
    prompts = {"low": male_prompt, "high": female_prompt}
    for name, prompt in prompts.items():
        assert clone(client, name, prompt).status_code == 200
    for name, prompt in prompts.items():
        source, copy = decode(prompt).median_f0(), synthesize(client, name).median_f0()
        assert abs(np.log2(copy / source)) < 0.15, (name, source, copy)


def test_clone_reproduces_speaking_rate(client, engine):
    slow = wav(spoken(engine, EN_PROMPT, "英文男", speed=0.6), ENGINE_RATE)
    fast = wav(spoken(engine, EN_PROMPT, "英文男", speed=1.6), ENGINE_RATE)
    clone(client, "slow", slow)
    clone(client, "fast", fast)
    ratio = synthesize(client, "slow").seconds / synthesize(client, "fast").seconds
    assert 1.8 < ratio < 3.5, ratio  # the prompts differ by 1.6 / 0.6 = 2.7x


def test_clone_reproduces_pitch_range(client, engine):
    monotone = np.concatenate([tone(0.5, f0=150.0) for _ in range(8)])
    lively = np.concatenate([tone(0.5, f0=f) for f in (110, 200, 130, 230, 120, 210, 140, 190)])
    clone(client, "monotone", wav(monotone, 16000), text="one two three four")
    clone(client, "lively", wav(lively, 16000), text="one two three four")
    flat = client.get("/voices/monotone").json()["range"]
    wide = client.get("/voices/lively").json()["range"]
    assert flat < 20 < 60 < wide, (flat, wide)
    assert synthesize(client, "lively").samples.size > 0
