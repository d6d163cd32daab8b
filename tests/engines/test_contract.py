"""The engine contract: what the core relies on from an engine (``SpeechEngine`` in app/core/engine.py), checked
on every engine through ``any_engine``: the embedded espeak-ng, and CosyVoice on the lane's tiny random model.

An engine names itself and its modes; lists its built-in speakers and the languages each voice speaks; makes a
voice from a prepared prompt that it then accepts, summarises as JSON, and never changes; refuses what is not its
voice, saying why; and speaks, in every mode it claims, float32 mono chunks with sound in them, the same audio for
the same seed, shorter when faster. A request whose client has left stops within a chunk: CosyVoice watches the
request's ``cancelled`` event; the embedded engine does not yet (the core stops it at its next chunk).
"""

import copy
import json
import re
import threading

import numpy as np
import pytest
import torch

from app.core.audio import prepare_prompt
from app.core.engine import Mode, SynthesisRequest
from tests.support.speech import EN_PROMPT

SHORT = "Hello, my friend."
# six sentences: more than a chunk on every engine (the embedded one yields one a sentence)
LONG = "Hello there. How are you today? The weather is fine. We walk to the park. Then we go home. Good night."
ISO_639 = re.compile(r"[a-z]{2,3}")
NOT_VOICES = {
    "string": "a string",
    "number": 42,
    "none": None,
    "list": [1, 2],
    "nonsense": {"nonsense": 1},
    "another_engines": {"engine": "another", "variant": "male", "pitch": 50, "range": 50, "rate": 175},
}


@pytest.fixture(scope="module")
def voice(any_engine, male_prompt) -> dict:
    """A voice the engine made from the male prompt, prepared as the service prepares an upload."""
    return any_engine.make_voice(EN_PROMPT, prepare_prompt(male_prompt, "prompt_audio", 1.0, 30.0))


def _request(mode: Mode, voice: dict, text: str = SHORT, **extra) -> SynthesisRequest:
    """A request in ``mode`` with the voice, and an instruction where the mode takes one."""
    instruction = "Speak slowly." if mode is Mode.INSTRUCT else ""
    return SynthesisRequest(mode, text, voice=voice, instruct_text=instruction, **extra)


def _speak(engine, request: SynthesisRequest) -> list[np.ndarray]:
    return list(engine.synthesize(request))


def test_it_names_itself_its_rate_and_its_modes(any_engine):
    assert isinstance(any_engine.name, str) and any_engine.name
    assert isinstance(any_engine.description, str) and any_engine.description
    assert isinstance(any_engine.sample_rate, int) and any_engine.sample_rate >= 16000
    assert isinstance(any_engine.capabilities, frozenset) and any_engine.capabilities
    assert all(isinstance(mode, Mode) for mode in any_engine.capabilities)


def test_its_voices_say_which_languages_they_speak(any_engine):
    builtins = any_engine.builtin_speakers()
    assert isinstance(builtins, list) and all(isinstance(name, str) and name for name in builtins)
    assert len(set(builtins)) == len(builtins)
    for speaker in [*builtins, None]:  # None: a cloned voice
        languages = any_engine.voice_languages(speaker)
        assert isinstance(languages, list) and languages, speaker
        assert all(isinstance(code, str) and ISO_639.fullmatch(code) for code in languages), (speaker, languages)


def test_a_voice_it_makes_is_one_it_accepts_and_describes_as_json(any_engine, voice):
    assert isinstance(voice, dict)
    assert any_engine.voice_problem(voice) is None
    described = any_engine.describe_voice(voice)
    assert isinstance(described, dict) and described
    assert json.loads(json.dumps(described)) == described


@pytest.mark.parametrize("not_a_voice", NOT_VOICES.values(), ids=NOT_VOICES.keys())
def test_what_is_not_its_voice_is_refused_with_a_reason(any_engine, not_a_voice):
    problem = any_engine.voice_problem(not_a_voice)
    assert isinstance(problem, str) and problem


def test_every_mode_it_claims_speaks_float32_mono_chunks_with_sound(any_engine, voice):
    for mode in sorted(any_engine.capabilities):
        chunks = _speak(any_engine, _request(mode, voice))
        assert chunks, mode
        for chunk in chunks:
            assert isinstance(chunk, np.ndarray) and chunk.dtype == np.float32 and chunk.ndim == 1, mode
            assert np.isfinite(chunk).all(), mode
        audio = np.concatenate(chunks)
        assert 0.3 < audio.size / any_engine.sample_rate < 15, (mode, audio.size)
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 1e-4, mode  # sound, not silence


def test_the_same_seed_gives_the_same_audio(any_engine, voice):
    request = _request(Mode.ZERO_SHOT, voice, seed=7)
    first, second = (np.concatenate(_speak(any_engine, request)) for _ in range(2))
    assert np.array_equal(first, second)


def test_a_faster_speed_is_shorter(any_engine, voice):
    normal, fast = (
        sum(chunk.size for chunk in _speak(any_engine, _request(Mode.ZERO_SHOT, voice, speed=speed)))
        for speed in (1.0, 2.0)
    )
    assert fast < 0.75 * normal, (fast, normal)


def test_speaking_never_changes_the_voice_it_is_given(any_engine, voice):
    before = copy.deepcopy(voice)
    for mode in sorted(any_engine.capabilities):
        _speak(any_engine, _request(mode, voice))
    assert set(voice) == set(before)
    for key, value in before.items():
        same = torch.equal(voice[key], value) if isinstance(value, torch.Tensor) else voice[key] == value
        assert same, key


def test_a_cancelled_request_stops_within_a_chunk(any_engine, voice):
    whole = _speak(any_engine, _request(Mode.ZERO_SHOT, voice, LONG, seed=3))
    cancelled = threading.Event()
    chunks = any_engine.synthesize(_request(Mode.ZERO_SHOT, voice, LONG, seed=3, cancelled=cancelled))
    first = next(chunks)
    cancelled.set()  # the client left
    rest = list(chunks)
    assert len(rest) <= 1, f"{len(rest)} chunks after the request was cancelled"
    assert first.size + sum(chunk.size for chunk in rest) < sum(chunk.size for chunk in whole) / 2
