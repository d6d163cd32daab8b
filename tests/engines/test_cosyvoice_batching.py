"""Requests batched together (app/engines/cosyvoice/batching.py), on each lane's tiny model.

A request batched with others gives the tokens and the audio it gives alone; a new request's prompt runs in
pieces while others decode; a request whose client leaves is dropped at the next step and the others go on;
the flow chunks of streams side by side run in one pass, each stream's mel as alone; without batching every
request decodes in a thread of its own and runs its flow alone, with the same result.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from app.core.engine import Mode, SynthesisRequest
from app.engines.cosyvoice.batching import Gatherer, PassFailed
from app.engines.cosyvoice.flow_streams import ChunkedStream
from app.engines.cosyvoice.llm import LMInput
from app.engines.cosyvoice.pipeline import Utterance
from app.engines.cosyvoice.vocoder import VocoderJob, vocode, vocode_one
from tests.support.speech import TWO_SENTENCES, ZH_TEXT

TOLERANCE = 1e-5
MEL_TOLERANCE = 1e-5


def _requests(cloned: dict) -> list[SynthesisRequest]:
    return [
        SynthesisRequest(Mode.ZERO_SHOT, TWO_SENTENCES, voice=cloned, seed=1, cancelled=threading.Event()),
        SynthesisRequest(Mode.CROSS_LINGUAL, TWO_SENTENCES, voice=cloned, seed=2, cancelled=threading.Event()),
        SynthesisRequest(Mode.ZERO_SHOT, ZH_TEXT, voice=cloned, seed=3, cancelled=threading.Event()),
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


def _steps(batcher, monkeypatch) -> list[tuple[str, int]]:
    steps = []
    monkeypatch.setattr(batcher, "observe", lambda kind, size, seconds: steps.append((kind, size)))
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


upstream_lane = pytest.mark.upstream_lane  # the fr-infer wheel's LLM runs upstream's own loop, unbatched


@upstream_lane
def test_requests_batched_together_speak_as_each_does_alone(cv_engine, cloned, monkeypatch):
    pipeline = cv_engine.pipeline
    pipeline.scheduler.prefill_piece = 8  # a cloned voice's prompt is ~150 positions: many pieces
    tokens, steps = _tokens_by_seed(pipeline, monkeypatch), _steps(pipeline.scheduler, monkeypatch)
    flows, stacked = _steps(pipeline.flows, monkeypatch), _batch_sizes(pipeline, monkeypatch)
    for gatherer in (pipeline.flows, pipeline.vocoders):
        monkeypatch.setattr(gatherer, "wait", 1.0)  # a pass waits for the others (not for long here)
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
    assert max(size for _, size in flows) >= 2, flows  # their flow chunks ran together too
    assert max(stacked) >= 2, stacked  # and their vocoder chunks, stacked
    assert tokens == alone_tokens
    for seed, audio in together.items():
        _assert_close(audio, alone[seed])


@upstream_lane
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


@upstream_lane
def test_without_batching_each_request_decodes_alone_to_the_same_audio(cv_engine, cloned, cv_settings, monkeypatch):
    from app.engines import load_engine

    requests = _requests(cloned)[::2]
    batched = {r.seed: _speak(cv_engine, r) for r in requests}
    settings = cv_settings.model_copy(update={"batching": False})
    engine = load_engine(settings).engine
    assert engine.pipeline.scheduler is None and engine.pipeline.flows is engine.pipeline.vocoders is None
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


def test_the_gathering_wait_is_a_setting(cv_settings, monkeypatch):
    from app.engines import load_engine

    monkeypatch.setenv("COSYVOICE_GATHER_WAIT_MS", "250")
    settings = type(cv_settings)(**cv_settings.model_dump(exclude={"gather_wait_ms"}))
    pipeline = load_engine(settings).engine.pipeline
    assert pipeline.flows.wait == pipeline.vocoders.wait == 0.25


@upstream_lane
def test_the_metrics_show_each_steps_batch_and_time(cv):
    response = cv.post("/tts", json={"tts_text": ZH_TEXT, "spk_id": "中文女"})
    assert response.status_code == 200 and len(response.content) > 1000
    samples = {
        (sample.name, sample.labels.get("kind"), sample.labels.get("stage")): sample.value
        for family in text_string_to_metric_families(cv.get("/metrics").text)
        for sample in family.samples
    }
    steps = samples[("cosyvoice_llm_batch_size_count", None, None)]
    assert steps >= 10  # upstream's minimum: two speech tokens per text token
    assert samples[("cosyvoice_llm_batch_size_sum", None, None)] == steps  # alone: a batch of one each step
    assert samples[("cosyvoice_llm_step_seconds_count", "decode", None)] == steps
    assert samples[("cosyvoice_llm_step_seconds_count", "prefill", None)] >= 1
    assert 0 < samples[("cosyvoice_llm_step_seconds_sum", "decode", None)] < 60
    for stage in ("flow", "vocoder"):
        passes = samples[("cosyvoice_token2wav_batch_size_count", None, stage)]
        assert passes >= 2 and samples[("cosyvoice_token2wav_batch_size_sum", None, stage)] == passes  # alone
        assert samples[("cosyvoice_token2wav_batch_seconds_count", None, stage)] == passes


# -- the flow's chunks, gathered ----------------------------------------------------------------------------
def _utterance(prompt_tokens: int) -> Utterance:
    generator = torch.Generator().manual_seed(prompt_tokens)
    prompt = torch.randint(0, 6561, (1, prompt_tokens), generator=generator, dtype=torch.int32)
    feat = torch.randn(1, 2 * prompt_tokens, 80, generator=generator) - 4
    embedding = torch.randn(1, 192, generator=generator)
    empty = torch.zeros(1, 0, dtype=torch.int32)
    return Utterance(LMInput(empty, empty, empty), prompt, feat, embedding)


def _flow_chunks(pipeline, utterance: Utterance, tokens: torch.Tensor) -> list[torch.Tensor]:
    """A stream's mel, chunk by chunk as the pipeline cuts it: the first chunk ends on a model chunk (its length
    depends on the prompt), then 50 tokens, then the rest without look-ahead."""
    stream = ChunkedStream(pipeline, utterance)
    first = 25 + (-utterance.prompt_tokens.shape[1] % 25)
    cuts = [0, first, first + 50]
    mels = [stream(tokens[:, a:b], tokens[:, b : b + 3]) for a, b in zip(cuts, cuts[1:], strict=False)]
    return [*mels, stream(tokens[:, cuts[-1] :], None)]


def test_flow_chunks_of_streams_side_by_side_run_in_one_pass_each_as_alone(cv_engine, monkeypatch):
    """Three streams at different points (prompt tails of 0, 10 and 2 tokens, so different numbers of frames
    before each chunk, and last chunks of different lengths): each first chunk runs at once, alone; every later
    round is gathered into one pass."""
    pipeline, flows = cv_engine.pipeline, cv_engine.pipeline.flows
    utterances = [_utterance(p) for p in (0, 60, 77)]
    generator = torch.Generator().manual_seed(7)
    tokens = [torch.randint(0, 6561, (1, 110 + 17 * i), generator=generator, dtype=torch.int32) for i in range(3)]
    monkeypatch.setattr(pipeline, "flows", None)
    alone = [_flow_chunks(pipeline, u, t) for u, t in zip(utterances, tokens, strict=True)]
    monkeypatch.setattr(pipeline, "flows", flows)
    monkeypatch.setattr(flows, "wait", 60.0)  # each pass waits for all three
    passes = _steps(flows, monkeypatch)
    ready = threading.Barrier(3)

    def stream(i: int) -> list[torch.Tensor]:
        with flows.joined():
            ready.wait()
            return _flow_chunks(pipeline, utterances[i], tokens[i])

    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(stream, range(3)))
    assert passes == [("flow", 1)] * 3 + [("flow", 3)] * 2
    for ours, theirs in zip(together, alone, strict=True):
        assert [m.shape for m in ours] == [m.shape for m in theirs]
        assert len({m.shape[2] for m in ours}) == 3 and theirs[0].abs().max() > 1  # different lengths, a real mel
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) <= MEL_TOLERANCE


def _batch_sizes(pipeline, monkeypatch) -> list[int]:
    kind = type(pipeline.vocoder(pipeline.generators(0)))
    sizes, original = [], kind.run

    def run(streams, steps):
        sizes.append(len(streams))
        return original(streams, steps)

    monkeypatch.setattr(kind, "run", staticmethod(run))
    return sizes


def test_vocoder_chunks_of_streams_side_by_side_run_as_one_batch_each_as_alone(cv_engine, monkeypatch):
    """Three streams' chunks of mel, each with its own state, noise and (CosyVoice3) phase: those of one length
    run stacked, the third stream's odd-sized chunk alone; every stream's audio as when it ran alone."""
    pipeline = cv_engine.pipeline
    generator = torch.Generator().manual_seed(11)
    rounds = [[50] * 3, [100, 100, 60], [200] * 3, [37] * 3]  # frames per stream per round; the last finalizes
    mels = [[torch.randn(1, 80, n, generator=generator) - 5 for n in frames] for frames in zip(*rounds, strict=True)]

    def jobs(vocoders, stream: int, round_: int) -> VocoderJob:
        return VocoderJob(vocoders[stream], mels[stream][round_], finalize=round_ == len(rounds) - 1)

    solos = [pipeline.vocoder(pipeline.generators(seed)) for seed in (1, 2, 3)]
    alone = [[vocode([jobs(solos, i, r)])[0] for r in range(len(rounds))] for i in range(3)]
    sizes = _batch_sizes(pipeline, monkeypatch)
    batched = [pipeline.vocoder(pipeline.generators(seed)) for seed in (1, 2, 3)]
    together = [vocode([jobs(batched, i, r) for i in range(3)]) for r in range(len(rounds))]
    assert sizes == [3, 2, 1, 3, 3]
    for i in range(3):
        ours, theirs = [chunks[i] for chunks in together], alone[i]
        assert [c.shape for c in ours] == [c.shape for c in theirs] and torch.cat(theirs, 1).abs().max() > 0.01
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)) <= TOLERANCE


def test_a_last_chunk_stacks_with_a_middle_one_only_where_the_vocoder_allows(cv_engine, monkeypatch):
    """CosyVoice3's causal HiFT runs a last chunk differently (no look-ahead left): never in one stack with a
    middle chunk of the same length. CosyVoice2's HiFT runs both alike and stacks them."""
    pipeline = cv_engine.pipeline
    generator = torch.Generator().manual_seed(5)
    mels = [torch.randn(1, 80, 50, generator=generator) - 5 for _ in range(2)]

    def jobs(streams) -> list[VocoderJob]:
        return [VocoderJob(streams[0], mels[0], finalize=False), VocoderJob(streams[1], mels[1], finalize=True)]

    alone = [vocode_one(job) for job in jobs([pipeline.vocoder(pipeline.generators(s)) for s in (1, 2)])]
    sizes = _batch_sizes(pipeline, monkeypatch)
    together = vocode(jobs([pipeline.vocoder(pipeline.generators(s)) for s in (1, 2)]))
    assert sizes == ([1, 1] if pipeline.causal_vocoder else [2])
    for ours, theirs in zip(together, alone, strict=True):
        assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= TOLERANCE


def test_a_vocoder_stack_that_fails_fails_only_its_own_streams(cv_engine, monkeypatch):
    pipeline = cv_engine.pipeline
    streams = [pipeline.vocoder(pipeline.generators(seed)) for seed in (1, 2, 3)]
    kind, original = type(streams[0]), type(streams[0]).run

    def run(group, steps):
        if steps[0].key[0] == 60:
            raise RuntimeError("out of memory")
        return original(group, steps)

    monkeypatch.setattr(kind, "run", staticmethod(run))
    generator = torch.Generator().manual_seed(3)
    mels = [torch.randn(1, 80, n, generator=generator) - 5 for n in (50, 50, 60)]
    audio = vocode([VocoderJob(stream, mel, finalize=False) for stream, mel in zip(streams, mels, strict=True)])
    assert [type(a) for a in audio] == [torch.Tensor, torch.Tensor, RuntimeError]
    assert audio[0].abs().max() > 0.01 and str(audio[2]) == "out of memory"


def _gathering(max_batch: int, wait: float, fail_on=None) -> tuple[Gatherer, list[list]]:
    batches = []

    def run(jobs: list) -> list:
        batches.append(list(jobs))
        if fail_on in jobs:
            raise ValueError(f"job {fail_on} is bad")
        return [job * 10 for job in jobs]

    return Gatherer(run, max_batch, wait, lambda *_: None, "test"), batches


def _in_threads(gatherer: Gatherer, jobs: list) -> list:
    """Each job from a stream of its own, every stream in the stage before any hands its job in."""
    ready = threading.Barrier(len(jobs))

    def stream(job):
        with gatherer.joined():
            ready.wait()
            try:
                return gatherer(job)
            except PassFailed as exc:
                assert exc.__cause__ is not None
                return str(exc)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(stream, jobs))


def test_a_stream_alone_never_waits_for_a_batch():
    gatherer, batches = _gathering(max_batch=4, wait=30.0)
    started = time.monotonic()
    with gatherer.joined():
        assert [gatherer(1), gatherer(2)] == [10, 20]
    assert gatherer(3) == 30  # nor one outside the stage
    assert batches == [[1], [2], [3]] and time.monotonic() - started < 15  # not the wait


def test_a_first_chunk_runs_at_once_alone():
    gatherer, batches = _gathering(max_batch=4, wait=30.0)
    started = time.monotonic()
    with gatherer.joined(), gatherer.joined():  # another stream in the stage: a pass would wait for it
        assert gatherer.alone(5) == 50
    assert batches == [[5]] and time.monotonic() - started < 15  # not the wait


def test_jobs_handed_in_together_run_together_up_to_the_batch():
    gatherer, batches = _gathering(max_batch=2, wait=30.0)
    assert _in_threads(gatherer, [1, 2, 3, 4, 5]) == [10, 20, 30, 40, 50]
    assert sorted(len(batch) for batch in batches) == [1, 2, 2]
    assert sorted(job for batch in batches for job in batch) == [1, 2, 3, 4, 5]


def test_a_stream_that_does_not_hand_in_delays_a_batch_by_the_wait_at_most():
    gatherer, batches = _gathering(max_batch=4, wait=0.05)
    started = time.monotonic()
    with gatherer.joined(), gatherer.joined():  # another stream in the stage, which hands nothing in
        assert gatherer(1) == 10
    assert batches == [[1]] and time.monotonic() - started < 10


def test_a_failed_pass_fails_every_stream_in_it_and_the_next_runs():
    gatherer, batches = _gathering(max_batch=3, wait=30.0, fail_on=2)
    assert _in_threads(gatherer, [1, 2, 3]) == ["the test pass failed: ValueError: job 2 is bad"] * 3
    assert _in_threads(gatherer, [4, 5]) == [40, 50]
    assert batches[-1] in ([4, 5], [5, 4])


def test_a_jobs_own_failure_fails_it_alone():
    def run(jobs: list) -> list:
        return [ValueError(f"job {job} is bad") if job == 2 else job * 10 for job in jobs]

    gatherer = Gatherer(run, 3, 30.0, lambda *_: None, "test")
    assert _in_threads(gatherer, [1, 2, 3]) == [10, "the test pass failed: ValueError: job 2 is bad", 30]


@upstream_lane
def test_a_request_whose_sampling_fails_fails_alone(cv_engine, cloned, monkeypatch):
    from app.core.errors import EngineFailure

    pipeline = cv_engine.pipeline
    monkeypatch.setattr(pipeline.scheduler, "prefill_piece", 1 << 20)  # every prompt whole: three from step 3
    requests = _requests(cloned)
    failing = requests[1]
    alone = {r.seed: _speak(cv_engine, r) for r in requests if r is not failing}
    original = pipeline.lm.choose

    def choose(decoding, scores):
        if decoding.generator.initial_seed() == failing.seed and len(decoding.decoded) == 5:
            raise RuntimeError("probabilities contain nan")
        return original(decoding, scores)

    monkeypatch.setattr(pipeline.lm, "choose", choose)
    steps = _steps(pipeline.scheduler, monkeypatch)
    _hold_until_all_arrive(pipeline, monkeypatch, len(requests))

    def speak(request):
        try:
            return _speak(cv_engine, request)
        except EngineFailure as exc:
            return str(exc)

    with ThreadPoolExecutor(len(requests)) as pool:
        together = dict(zip([r.seed for r in requests], pool.map(speak, requests), strict=True))
    assert "probabilities contain nan" in together[failing.seed]
    assert max(size for kind, size in steps if kind == "decode") == 3  # it failed inside a batch of three
    for seed, audio in alone.items():
        _assert_close(together[seed], audio)
