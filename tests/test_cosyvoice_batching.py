"""The LLM stage batched across requests (app/engines/cosyvoice/batching.py), on each lane's tiny model.

A request batched with others gives the tokens and the audio it gives alone; a new request's prompt runs in
pieces while others decode; a request whose client leaves is dropped at the next step and the others go on;
without batching every request decodes in a thread of its own, with the same result.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.audio import prepare_prompt
from app.engines.base import Mode, SynthesisRequest
from tests.conftest import EN_PROMPT
from tests.test_cosyvoice import TEXT, TWO_SENTENCES

pytestmark = pytest.mark.upstream_lane  # the fr-infer wheel's LLM runs upstream's own loop, unbatched

TOLERANCE = 1e-5


@pytest.fixture
def cv_engine(cv):
    return cv.app.state.speech.engine


@pytest.fixture
def cloned(cv_engine, male_prompt) -> dict:
    return cv_engine.make_voice(EN_PROMPT, prepare_prompt(male_prompt, "prompt_audio", 1.0, 30.0))


def _requests(cloned: dict) -> list[SynthesisRequest]:
    return [
        SynthesisRequest(Mode.ZERO_SHOT, TWO_SENTENCES, voice=cloned, seed=1, cancelled=threading.Event()),
        SynthesisRequest(Mode.CROSS_LINGUAL, TWO_SENTENCES, voice=cloned, seed=2, cancelled=threading.Event()),
        SynthesisRequest(Mode.ZERO_SHOT, TEXT, voice=cloned, seed=3, cancelled=threading.Event()),
    ]


def _tokens_by_seed(pipeline, monkeypatch) -> dict[int, list[int]]:
    """Every token the LLM chooses, by the seed of the request it is for."""
    original, tokens = pipeline.lm.choose, {}

    def recording(decoding, scores):
        token = original(decoding, scores)
        if token is not None:
            tokens.setdefault(decoding.generator.initial_seed(), []).append(token)
        return token

    monkeypatch.setattr(pipeline.lm, "choose", recording)
    return tokens


def _steps(scheduler, monkeypatch) -> list[tuple[str, int]]:
    steps = []
    monkeypatch.setattr(scheduler, "observe", lambda kind, size, seconds: steps.append((kind, size)))
    return steps


def _hold_until_all_arrive(pipeline, monkeypatch, count: int) -> None:
    """The first prompt waits until ``count`` requests have been handed to the LLM stage, so that they run
    together however the threads happen to start."""
    arrived, changed, original_prefill = [], threading.Condition(), pipeline.lm.prefill
    original_submit = pipeline.scheduler.submit

    def submit(*args):
        with changed:
            arrived.append(1)
            changed.notify_all()
        original_submit(*args)

    def prefill(decoding, most):
        with changed:
            assert changed.wait_for(lambda: len(arrived) >= count, timeout=60)
        return original_prefill(decoding, most)

    monkeypatch.setattr(pipeline.scheduler, "submit", submit)
    monkeypatch.setattr(pipeline.lm, "prefill", prefill)


def _speak(engine, request: SynthesisRequest) -> np.ndarray:
    chunks = list(engine.synthesize(request))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _together(engine, requests: list[SynthesisRequest]) -> dict[int, np.ndarray]:
    with ThreadPoolExecutor(len(requests)) as pool:
        return dict(zip([r.seed for r in requests], pool.map(lambda r: _speak(engine, r), requests), strict=True))


def _assert_close(ours: np.ndarray, alone: np.ndarray) -> None:
    assert ours.shape == alone.shape and np.abs(alone).max() > 0.01
    assert np.abs(ours - alone).max() <= TOLERANCE


def test_requests_batched_together_speak_as_each_does_alone(cv_engine, cloned, monkeypatch):
    pipeline = cv_engine.pipeline
    pipeline.scheduler.prefill_piece = 8  # a cloned voice's prompt is ~150 positions: many pieces
    tokens, steps = _tokens_by_seed(pipeline, monkeypatch), _steps(pipeline.scheduler, monkeypatch)
    requests = _requests(cloned)
    alone = {r.seed: _speak(cv_engine, r) for r in requests}
    alone_tokens = {seed: list(t) for seed, t in tokens.items()}
    assert max(size for kind, size in steps if kind == "decode") == 1
    tokens.clear(), steps.clear()
    _hold_until_all_arrive(pipeline, monkeypatch, len(requests))

    together = _together(cv_engine, requests)
    decode = [size for kind, size in steps if kind == "decode"]
    assert max(decode) >= 2, decode  # they were decoded together
    pieces = [size for kind, size in steps if kind == "prefill"]
    assert 8 in pieces and max(pieces) > 8  # later prompts ran in pieces between steps; the first whole
    assert tokens == alone_tokens
    for seed, audio in together.items():
        _assert_close(audio, alone[seed])


def test_a_request_that_leaves_is_dropped_at_the_next_step_and_the_others_go_on(cv_engine, cloned, monkeypatch):
    pipeline = cv_engine.pipeline
    pipeline.scheduler.prefill_piece = 1 << 20  # every prompt whole: all three decode from the third step
    tokens = _tokens_by_seed(pipeline, monkeypatch)
    requests = _requests(cloned)
    leaving = requests[1]
    alone = {r.seed: _speak(cv_engine, r) for r in requests if r is not leaving}
    tokens.clear()
    steps = _steps(pipeline.scheduler, monkeypatch)
    recording = pipeline.lm.choose

    def leave_at_ten(decoding, scores):
        token = recording(decoding, scores)
        if decoding.generator.initial_seed() == leaving.seed and len(tokens.get(leaving.seed, [])) == 10:
            leaving.cancelled.set()  # the client leaves during this step
        return token

    monkeypatch.setattr(pipeline.lm, "choose", leave_at_ten)
    _hold_until_all_arrive(pipeline, monkeypatch, len(requests))
    together = _together(cv_engine, requests)
    assert len(tokens[leaving.seed]) == 10  # not one step more
    assert max(size for kind, size in steps if kind == "decode") == 3
    for seed, audio in alone.items():
        _assert_close(together[seed], audio)
    assert pipeline.scheduler.batch == 0


def test_without_batching_each_request_decodes_alone_to_the_same_audio(cv_engine, cloned, cv_settings, monkeypatch):
    from app.engines import load_engine

    requests = _requests(cloned)[::2]
    batched = {r.seed: _speak(cv_engine, r) for r in requests}
    settings = cv_settings.model_copy(update={"batching": False})
    engine = load_engine(settings).engine
    assert engine.pipeline.scheduler is None
    threads = []
    original = engine.pipeline.lm.prefill

    def prefill(decoding, most):
        threads.append(threading.current_thread())
        return original(decoding, most)

    monkeypatch.setattr(engine.pipeline.lm, "prefill", prefill)
    together = _together(engine, requests)
    assert len({id(thread) for thread in threads}) == len(threads) >= 3  # a thread per sentence
    for seed, audio in together.items():
        _assert_close(audio, batched[seed])


def test_the_metrics_show_each_steps_batch_and_time(cv):
    response = cv.post("/tts", json={"tts_text": TEXT, "spk_id": "中文女"})
    assert response.status_code == 200 and len(response.content) > 1000
    samples = {
        (sample.name, sample.labels.get("kind")): sample.value
        for family in text_string_to_metric_families(cv.get("/metrics").text)
        for sample in family.samples
    }
    steps = samples[("cosyvoice_llm_batch_size_count", None)]
    assert steps >= 10  # upstream's minimum: two speech tokens per text token
    assert samples[("cosyvoice_llm_batch_size_sum", None)] == steps  # alone: a batch of one each step
    assert samples[("cosyvoice_llm_step_seconds_count", "decode")] == steps
    assert samples[("cosyvoice_llm_step_seconds_count", "prefill")] >= 1
    assert 0 < samples[("cosyvoice_llm_step_seconds_sum", "decode")] < 60
