"""The engine's own streaming loop against upstream's code, on the tiny models of each lane.

What is compared, with the same seeds and the same tokens:
- the chunked flow's mel, chunk by chunk, with upstream's ``flow.inference(streaming=True)`` over the prompt
  and every token so far (upstream's streaming), and with one pass over the whole utterance;
- the stream's audio with upstream's ``tts(stream=True)`` and the whole audio with ``tts(stream=False)``
  (upstream's own chunk loop, vocoder caches and cross-fades), for a built-in voice, a cloned voice, each
  mode and a text of two sentences; on CosyVoice3 with upstream's ``inference_zero_shot`` end to end;
- the LLM's tokens with upstream's ``llm.inference`` (the pinned commit's sampling: upstream lanes);
- the CosyVoice3 vocoder's window with upstream re-vocoding everything, over a long utterance.

Upstream's CosyVoice2 vocoder draws noise from the global RNG while its LLM thread samples from it too, so
its own stream is not reproducible; the reference runs upstream's LLM first, then upstream's ``tts`` on those
tokens (its voice-conversion input, the same chunk loop) with the RNG seeded again. The engine gives each
request two generators with that seed, which is what makes the comparison possible at all.
"""

import threading
import time

import numpy as np
import pytest
import torch

from app.core.engine import Mode, SynthesisRequest
from app.engines.cosyvoice.flow import FlowPrefix
from app.engines.cosyvoice.flow_streams import upstream_flow
from app.engines.cosyvoice.pipeline import StreamOptions
from app.engines.cosyvoice.prompts import PromptCache
from app.engines.cosyvoice.vocoder import HiftV3
from tests.support.doors import clone
from tests.support.speech import TWO_SENTENCES, ZH_TEXT

MEL_TOLERANCE = 1e-5  # float32 sums in another order (measured: 2e-6)
AUDIO_TOLERANCE = 1e-5  # measured: 1.4e-7


def _upstream_model(cv_engine):
    """Upstream's CosyVoice2Model / CosyVoice3Model, its per-instance hop length reset (upstream grows it)."""
    model = cv_engine._model.model
    if hasattr(model, "token_hop_len"):
        model.token_hop_len = 25
    return model


def _tokens_of(cv_engine, monkeypatch) -> list[list[int]]:
    """The engine's LLM tokens, a list per sentence (a request's sentences are decoded one after another)."""
    lm, original, decodings, sentences = cv_engine.pipeline.lm, cv_engine.pipeline.lm.choose, [], []

    def recording(decoding, scores):
        token = original(decoding, scores)
        if not decodings or decodings[-1] is not decoding:
            decodings.append(decoding)
            sentences.append([])
        if token is not None:  # None: it stopped
            sentences[-1].append(token)
        return token

    monkeypatch.setattr(lm, "choose", recording)
    return sentences


def _engine_audio(cv_engine, request: SynthesisRequest) -> list[np.ndarray]:
    return list(cv_engine.synthesize(request))


def _reference(cv_engine, utterances, seed: int, stream: bool) -> tuple[list[list[int]], list[np.ndarray]]:
    """Upstream's tokens for each sentence (its LLM, global RNG seeded once), then upstream's tts on them
    (its chunk loop; the RNG seeded again for the vocoder's draws)."""
    from cosyvoice.utils.common import set_all_random_seed

    model = _upstream_model(cv_engine)
    set_all_random_seed(seed)
    tokens = []
    for utterance in utterances:
        lm = utterance.lm

        def length(t):
            return torch.tensor([t.shape[1]], dtype=torch.int32)

        tokens.append(
            list(
                model.llm.inference(
                    text=lm.text,
                    text_len=length(lm.text),
                    prompt_text=lm.prompt_text,
                    prompt_text_len=length(lm.prompt_text),
                    prompt_speech_token=lm.prompt_speech,
                    prompt_speech_token_len=length(lm.prompt_speech),
                    embedding=torch.zeros(0, 192),
                    uuid="ref",
                )  # fmt: skip
            )
        )
    set_all_random_seed(seed)
    chunks = []
    for utterance, sentence in zip(utterances, tokens, strict=True):
        model.token_hop_len = 25
        outputs = model.tts(
            text=utterance.lm.text, flow_embedding=utterance.embedding, llm_embedding=utterance.embedding,
            flow_prompt_speech_token=utterance.prompt_tokens, prompt_speech_feat=utterance.prompt_feat,
            source_speech_token=torch.tensor([sentence], dtype=torch.int32), stream=stream,
        )  # fmt: skip
        chunks += [out["tts_speech"].reshape(-1).numpy() for out in outputs]
    return tokens, chunks


def _utterances(cv_engine, monkeypatch, request: SynthesisRequest) -> list:
    made, original = [], cv_engine._utterance

    def keeping(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(cv_engine, "_utterance", keeping)
    return made


def _assert_same_audio(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert [len(c) for c in ours] == [len(c) for c in theirs]  # the same chunks
    difference = np.abs(np.concatenate(ours) - np.concatenate(theirs)).max()
    assert difference <= AUDIO_TOLERANCE, difference
    assert np.abs(np.concatenate(theirs)).max() > 0.01  # not two silences


CASES = {
    "builtin": {"mode": Mode.SFT, "speaker": "中文女"},
    "cloned zero-shot": {"mode": Mode.ZERO_SHOT},
    "cloned cross-lingual": {"mode": Mode.CROSS_LINGUAL},
    "cloned instruct": {"mode": Mode.INSTRUCT, "instruct_text": "Speak slowly."},
    "two sentences": {"mode": Mode.ZERO_SHOT, "text": TWO_SENTENCES},
}


@pytest.mark.upstream_lane  # the fr-infer wheel's LLM samples differently (see llm.py); its lane tests flow+vocoder
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_engine_speaks_as_upstream_does(cv_engine, cloned, monkeypatch, case, stream):
    fields = dict(CASES[case])
    text = fields.pop("text", ZH_TEXT)
    voice = cv_engine._model.frontend.spk2info["中文女"] if fields.get("speaker") else cloned
    request = SynthesisRequest(text=text, voice=voice, seed=7, stream=stream, **fields)
    utterances, tokens = _utterances(cv_engine, monkeypatch, request), _tokens_of(cv_engine, monkeypatch)
    ours = _engine_audio(cv_engine, request)
    assert len(utterances) == (2 if case == "two sentences" else 1)
    upstream_tokens, theirs = _reference(cv_engine, utterances, seed=7, stream=stream)
    assert tokens == upstream_tokens and all(len(t) > 30 for t in tokens)
    if not stream:
        assert len(ours) == len(utterances)  # one chunk per sentence
    _assert_same_audio(ours, theirs)


@pytest.mark.upstream_lane
@pytest.mark.generation(3)
def test_cosyvoice3_streams_as_upstreams_inference_end_to_end(cv_engine, cloned, monkeypatch):
    """No token hand-over: upstream's own inference_zero_shot(stream=True), its LLM thread included, over a
    text it splits in two (CosyVoice3 draws random numbers only in its LLM). Upstream's model object keeps
    the hop length its last stream grew to (the next sentence would start with 100-token chunks): the
    reference starts each sentence at 25, as the engine does."""
    from cosyvoice.utils.common import set_all_random_seed

    ours = _engine_audio(cv_engine, SynthesisRequest(Mode.ZERO_SHOT, TWO_SENTENCES, voice=cloned, seed=3))
    upstream, model = cv_engine._model, cv_engine._model.model
    original = model.tts

    def fresh_hop(*args, **kwargs):
        model.token_hop_len = 25
        yield from original(*args, **kwargs)

    monkeypatch.setattr(model, "tts", fresh_hop)
    monkeypatch.setitem(upstream.frontend.spk2info, "__reference", dict(cloned))
    set_all_random_seed(3)
    outputs = upstream.inference_zero_shot(TWO_SENTENCES, "", "", zero_shot_spk_id="__reference", stream=True)
    _assert_same_audio(ours, [out["tts_speech"].reshape(-1).numpy() for out in outputs])


@pytest.mark.parametrize("prompt_tokens", [0, 60, 77])
def test_the_chunked_flow_is_upstreams_streaming_flow(cv_engine, prompt_tokens):
    """Chunk by chunk against upstream re-running its flow over everything so far; then all chunks against one
    pass of the streaming flow over the whole utterance (the same mel, by the model's design)."""
    pipeline, flow = cv_engine.pipeline, cv_engine.pipeline.flow
    generator = torch.Generator().manual_seed(prompt_tokens)
    prompt = torch.randint(0, 6561, (1, prompt_tokens), generator=generator, dtype=torch.int32)
    feat = torch.randn(1, 2 * prompt_tokens, 80, generator=generator) - 4
    embedding = torch.randn(1, 192, generator=generator)
    tokens = torch.randint(0, 6561, (1, 190), generator=generator, dtype=torch.int32)
    from app.engines.cosyvoice.flow_streams import ChunkedStream
    from app.engines.cosyvoice.llm import LMInput
    from app.engines.cosyvoice.pipeline import Utterance

    empty = torch.zeros(1, 0, dtype=torch.int32)
    utterance = Utterance(LMInput(empty, empty, empty), prompt, feat, embedding)
    stream = ChunkedStream(pipeline, utterance)
    cuts, offset, hop = [], -prompt_tokens % 25 + 25, 25
    while offset + 3 <= tokens.shape[1]:
        cuts.append(offset)
        hop = min(100, hop * 2)
        offset += hop
    ours, previous = [], 0
    for cut in cuts:
        ours.append(stream(tokens[:, previous:cut], tokens[:, cut : cut + 3]))
        theirs = upstream_flow(flow, tokens[:, : cut + 3], utterance, streaming=True, finalize=False)
        theirs = theirs[:, :, previous * 2 :]
        assert ours[-1].shape == theirs.shape
        assert (ours[-1] - theirs).abs().max() <= MEL_TOLERANCE
        previous = cut
    ours.append(stream(tokens[:, previous:], None))
    whole = upstream_flow(flow, tokens, utterance, streaming=True, finalize=True)
    assert torch.cat(ours, dim=2).shape == whole.shape and (torch.cat(ours, dim=2) - whole).abs().max() <= MEL_TOLERANCE
    assert whole.abs().max() > 1  # a real mel


@pytest.mark.generation(3)  # CosyVoice2's vocoder is upstream's own chunked algorithm (compared above)
def test_the_cosyvoice3_vocoder_window_is_upstreams_whole_run(cv_engine):
    """600 frames (12 s) in upstream's chunk sizes: each chunk vocodes 64 + new frames, upstream all so far."""
    hift = cv_engine.pipeline.hift
    mel = torch.randn(1, 80, 600, generator=torch.Generator().manual_seed(1)) * 2 - 4
    cuts = [50, 150, 350, 550]
    window, theirs, sent, previous, ours = HiftV3(hift), [], 0, 0, []
    for cut in [*cuts, 600]:
        final = cut == 600
        ours.append(window(mel[:, :, previous:cut], finalize=final))
        speech, _ = hift.inference(speech_feat=mel[:, :, :cut], finalize=final)
        theirs.append(speech[:, sent:])
        sent, previous = sent + theirs[-1].shape[1], cut
    _assert_same_audio([c.reshape(-1).numpy() for c in ours], [c.reshape(-1).numpy() for c in theirs])


def test_a_voices_prompt_runs_through_the_flow_once(cv, cv_engine, male_prompt):
    """Made when the voice is cloned; every request after that starts from the kept prefix (after a restart
    the first request makes it again)."""
    prompts = cv_engine.pipeline.prompts
    before = prompts.misses
    assert clone(cv, "kept", male_prompt).status_code == 200
    assert prompts.misses == before + 1 and prompts.nbytes > 0
    hits = prompts.hits
    for _ in range(2):
        assert cv.post("/tts", json={"tts_text": ZH_TEXT, "spk_id": "kept"}).status_code == 200
    assert prompts.hits == hits + 2 and prompts.misses == before + 1
    cv_engine.pipeline.prompts = PromptCache(prompts.budget)  # what a restart leaves: nothing kept
    assert cv.post("/tts", json={"tts_text": ZH_TEXT, "spk_id": "kept"}).status_code == 200
    assert cv_engine.pipeline.prompts.misses == 1 and cv_engine.pipeline.prompts.hits == 0


def test_each_chunk_runs_the_flow_over_its_own_frames_only(cv_engine, cloned, monkeypatch):
    """The flow's estimator sees each chunk's new frames (plus, once, the prompt's unfinished chunk): every frame
    is run once, and a chunk's work does not grow with the audio before it. Upstream runs the prompt and
    every frame so far again at every chunk."""
    import app.engines.cosyvoice.flow as flow_module

    frames = []
    for name in ("unet_step", "dit_step"):
        monkeypatch.setattr(flow_module, name, _counting(getattr(flow_module, name), frames))
    cv_engine.pipeline.options = StreamOptions(tail="chunked")  # the last chunk too (upstream's is a whole pass)
    chunks = _engine_audio(cv_engine, SynthesisRequest(Mode.ZERO_SHOT, TWO_SENTENCES, voice=cloned, seed=1))
    per_chunk = frames[:: flow_module.TIMESTEPS]  # the ten ODE steps of a chunk see the same frames
    assert len(frames) == flow_module.TIMESTEPS * len(per_chunk) and len(per_chunk) == len(chunks) >= 4
    prompt = cloned["flow_prompt_speech_token"].shape[1]
    prompt_tail = 2 * (prompt - cv_engine.pipeline.chunked.prefix_tokens(prompt))  # run with each first chunk
    audio_frames = sum(len(chunk) for chunk in chunks) // 480
    assert sum(per_chunk) == audio_frames + 2 * prompt_tail  # two sentences, each frame run once
    assert max(per_chunk) <= 2 * 100 + prompt_tail, per_chunk


def _counting(original, frames: list):
    def counted(estimator, state, x, *args, **kwargs):
        frames.append(x.shape[-1])
        return original(estimator, state, x, *args, **kwargs)

    return counted


def test_token_to_wave_is_upstreams_on_every_lane(cv_engine, cloned, lane):
    """Given the same tokens, the token-to-wave stage against upstream's tts: on the fr-infer wheel too, whose
    chunks stay at 25 tokens."""
    from cosyvoice.utils.common import set_all_random_seed

    from app.engines.cosyvoice.llm import LMInput, TokenStream
    from app.engines.cosyvoice.pipeline import Utterance

    pipeline = cv_engine.pipeline
    if not lane.upstream:
        pipeline.options = StreamOptions(max_hop=25)
    tokens = torch.randint(0, 6561, (1, 260), generator=torch.Generator().manual_seed(5), dtype=torch.int32)
    empty = torch.zeros(1, 0, dtype=torch.int32)
    utterance = Utterance(
        LMInput(empty, empty, empty), cloned["flow_prompt_speech_token"], cloned["prompt_speech_feat"],
        cloned["flow_embedding"],
    )  # fmt: skip
    stream = TokenStream()
    for token in tokens[0].tolist():
        stream.put(token)
    stream.finish()
    vocoder = pipeline.vocoder(pipeline.generators(6))
    ours = [c.reshape(-1).numpy() for c in pipeline._stream(utterance, stream, vocoder, bool)]
    model = _upstream_model(cv_engine)
    set_all_random_seed(6)
    theirs = [
        out["tts_speech"].reshape(-1).numpy()
        for out in model.tts(
            flow_embedding=utterance.embedding,
            llm_embedding=utterance.embedding,
            flow_prompt_speech_token=utterance.prompt_tokens,
            prompt_speech_feat=utterance.prompt_feat,
            source_speech_token=tokens,
            stream=True,
        )  # fmt: skip
    ]
    assert len(ours) >= 4
    _assert_same_audio(ours, theirs)


@pytest.mark.upstream_lane
def test_the_llm_never_computes_the_text_head(cv_engine, cloned):
    head, calls = cv_engine.pipeline.lm.llm.llm.model.lm_head, []
    hook = head.register_forward_hook(lambda *_: calls.append(1))
    try:
        chunks = _engine_audio(cv_engine, SynthesisRequest(Mode.ZERO_SHOT, ZH_TEXT, voice=cloned, seed=2))
    finally:
        hook.remove()
    assert chunks and calls == []


@pytest.mark.upstream_lane  # the fr-infer wheel's own sampling draws from the process-wide RNG (llm.py)
def test_a_seed_gives_the_same_audio_whatever_runs_beside_it(cv_engine, cloned):
    alone = np.concatenate(_engine_audio(cv_engine, SynthesisRequest(Mode.ZERO_SHOT, ZH_TEXT, voice=cloned, seed=9)))
    results = {}

    def speak(seed: int) -> None:
        request = SynthesisRequest(Mode.ZERO_SHOT, ZH_TEXT, voice=cloned, seed=seed)
        results[seed] = np.concatenate(_engine_audio(cv_engine, request))

    threads = [threading.Thread(target=speak, args=(seed,)) for seed in (9, 10, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[9].shape == alone.shape  # the same tokens; the audio within the rounding of batched passes
    assert np.abs(results[9] - alone).max() <= AUDIO_TOLERANCE
    assert not np.array_equal(results[10], alone)


def _flow_utterance(voice: dict):
    from app.engines.cosyvoice.llm import LMInput
    from app.engines.cosyvoice.pipeline import Utterance

    return Utterance(
        LMInput.empty(), voice["flow_prompt_speech_token"], voice["prompt_speech_feat"], voice["flow_embedding"]
    )


def _prefix_tensors(prefix: FlowPrefix) -> list[torch.Tensor]:
    """Everything a prefix holds: each store's keys and values up to its length, and each convolution tail."""
    held = []
    for state in [prefix.encoder, *prefix.steps]:
        for store in state.attention.values():
            held += [store._keys[:, :, : store.length].clone(), store._values[:, :, : store.length].clone()]
        held += [tail.clone() for tail in state.tails.values()]
    return held


def test_the_prefix_copy_leaves_the_kept_one_untouched(cv_engine, cloned):
    utterance = _flow_utterance(cloned)
    before = _prefix_tensors(cv_engine.pipeline.prefix(utterance))
    assert len(before) > 20
    _engine_audio(cv_engine, SynthesisRequest(Mode.ZERO_SHOT, TWO_SENTENCES, voice=cloned, seed=4))
    after = _prefix_tensors(cv_engine.pipeline.prefix(utterance))
    assert len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_a_prefix_over_the_cache_budget_is_run_for_each_stream(cv_engine, cloned, caplog):
    """Not kept (with a warning naming the setting), not copied, and the audio the same as from the cache."""
    request = SynthesisRequest(Mode.ZERO_SHOT, ZH_TEXT, voice=cloned, seed=3)
    cached = _engine_audio(cv_engine, request)
    cv_engine.pipeline.prompts = PromptCache(budget=1 << 10)
    for _ in range(2):
        _assert_same_audio(_engine_audio(cv_engine, request), cached)
    assert cv_engine.pipeline.prompts.nbytes == 0 and cv_engine.pipeline.prompts.misses == 2
    warnings = [r.getMessage() for r in caplog.records if "COSYVOICE_PROMPT_CACHE_MB" in r.getMessage()]
    assert len(warnings) == 1 and "MiB" in warnings[0]  # once per voice, not per stream


def test_a_failing_token_to_wave_stage_stops_the_llm(cv_engine, cloned, monkeypatch):
    """The LLM stage ends when the consumer fails: here it would otherwise decode forever. Batched (the
    scheduler drops the request before ``speak`` returns) or, on the fr-infer wheel, upstream's own loop."""
    pipeline, produced = cv_engine.pipeline, []

    def endless(decoding, scores):  # ~17 minutes at this pace: a stage that never stops fails the join below
        decoding.max_len = 10**6
        decoding.next_input = pipeline.lm.llm.speech_embedding.weight[7].reshape(1, -1)
        produced.append(7)
        time.sleep(0.001)
        return 7

    def endless_upstream(request, generator):
        while len(produced) < 10**6:
            produced.append(7)
            time.sleep(0.001)
            yield 7

    def failing(vocoder, mel, finalize, **options):
        raise RuntimeError("the vocoder broke")

    if pipeline.scheduler is not None:
        monkeypatch.setattr(pipeline.lm, "choose", endless)
    else:
        monkeypatch.setattr(pipeline.lm, "_upstream_tokens", endless_upstream)
    monkeypatch.setattr(pipeline, "_vocode", failing)
    utterance = cv_engine._utterance(SynthesisRequest(Mode.ZERO_SHOT, ZH_TEXT), cloned, False, ZH_TEXT)
    outcome = []

    def speak():
        try:
            list(pipeline.speak(utterance, pipeline.generators(1), stream=True))
        except RuntimeError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=speak, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and outcome == ["the vocoder broke"]
    assert 28 <= len(produced) < 5_000  # stopped within seconds (its first chunk needs 28)
    stopped = len(produced)
    time.sleep(0.2)
    assert len(produced) == stopped  # nothing decodes it any more


@pytest.mark.parametrize("static_chunk_size", [None, 0])
def test_an_estimator_without_a_chunk_size_takes_upstreams_hop(cv_engine, monkeypatch, static_chunk_size):
    """TensorRT's estimator wrapper has no static_chunk_size: the schedule takes upstream's token_hop_len (25;
    a first hop of 40 is refused against it) and the flow streams upstream's way."""
    from app.engines.cosyvoice.pipeline import Pipeline

    estimator = cv_engine._model.model.flow.decoder.estimator
    if static_chunk_size is None:
        monkeypatch.delattr(estimator, "static_chunk_size")
    else:
        monkeypatch.setattr(estimator, "static_chunk_size", static_chunk_size)
    pipeline = Pipeline(cv_engine._model.model, StreamOptions(first_hop=50, max_hop=75))
    assert pipeline.chunk == 25 and pipeline.chunked is None and "chunk size" in pipeline.unchunked
    with pytest.raises(ValueError, match=r"first_hop \(40 tokens\) is not a multiple of the model's chunk \(25\)"):
        Pipeline(cv_engine._model.model, StreamOptions(first_hop=40))


def test_modules_upstream_replaced_make_the_flow_stream_its_way(cv_engine, monkeypatch):
    """Decided from what upstream loaded, not from the settings (upstream ignores them without CUDA)."""
    from app.engines.cosyvoice.flow import chunkable

    flow = cv_engine._model.model.flow
    assert chunkable(flow) is None
    monkeypatch.delattr(flow.decoder, "estimator")  # as upstream's load_trt, which then puts its wrapper there
    monkeypatch.setattr(flow.decoder, "estimator", object(), raising=False)  # TensorRT's is no nn.Module
    assert "COSYVOICE_LOAD_TRT" in chunkable(flow)
    monkeypatch.setattr(flow, "encoder", torch.jit.script(torch.nn.Identity()), raising=False)  # CosyVoice3: none
    assert "COSYVOICE_LOAD_JIT" in chunkable(flow)


def test_the_prompt_cache_keeps_the_most_recent_within_its_budget():
    def prefix(frames: int) -> FlowPrefix:
        kept = FlowPrefix(25)
        kept.encoder.keys_values("layer").extend(torch.zeros(1, 1, frames, 256), torch.zeros(1, 1, frames, 256))
        return kept  # 2 KiB a frame

    cache = PromptCache(budget=10 * 2048)
    cache.put("a", prefix(4))
    cache.put("b", prefix(4))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", prefix(4))  # over budget: b goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", prefix(11))  # larger than the whole budget: not kept, nothing dropped for it
    assert cache.get("huge") is None and cache.nbytes == 8 * 2048


def test_a_flow_without_chunks_streams_as_upstream_does(cv_engine, cloned, lane):
    """The fallback for flows the chunked path cannot run (TorchScript or TensorRT modules, a model without a
    streaming chunk size): every chunk over the prompt and all tokens so far, upstream's own way."""
    from app.engines.cosyvoice.pipeline import Pipeline

    options = StreamOptions() if lane.upstream else StreamOptions(max_hop=25)
    cv_engine.pipeline = Pipeline(cv_engine._model.model, options, unchunked="forced by the test")
    assert cv_engine.pipeline.chunked is None
    test_token_to_wave_is_upstreams_on_every_lane(cv_engine, cloned, lane)


def test_the_stream_settings_reach_the_engine_and_bad_ones_stop_it(cv_settings, monkeypatch):
    from app.config import Settings
    from app.engines import load_engine
    from app.engines.cosyvoice import EngineStartError

    for name, value in {"STREAM_FIRST_HOP": "50", "STREAM_MAX_HOP": "200", "STREAM_TAIL": "chunked"}.items():
        monkeypatch.setenv(f"COSYVOICE_{name}", value)
    monkeypatch.setenv("COSYVOICE_PROMPT_CACHE_MB", "1.5")
    monkeypatch.setenv("COSYVOICE_LOAD_JIT", "true")  # upstream turns it off without CUDA: the flow stays chunked
    where = {"model_dir": cv_settings.model_dir, "data_dir": cv_settings.data_dir, "src": cv_settings.src}
    pipeline = load_engine(Settings(engine="cosyvoice", **where)).engine.pipeline
    assert pipeline.options == StreamOptions(50, 200, "chunked", int(1.5 * 2**20))
    assert pipeline.prompts.budget == int(1.5 * 2**20) and pipeline.chunked is not None
    monkeypatch.setenv("COSYVOICE_STREAM_FIRST_HOP", "30")  # not a multiple of the model's 25-token chunk
    with pytest.raises(EngineStartError, match=r"first_hop \(30 tokens\) is not a multiple of the model's chunk"):
        load_engine(Settings(engine="cosyvoice", **where))
