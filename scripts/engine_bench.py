"""Engine-level measurements of the CosyVoice engine against upstream's own code on the same loaded model.

Shared by ``bench_model.py`` (CPU, with HTTP and upstream's runtime server) and ``gpu_bench.py`` (a CUDA
machine with no HTTP stack): what one LLM decode step costs, what token-to-wave chunk k costs against k,
and first audio and aggregate real-time factor of N requests at once, the engine's and upstream's.
"""

import concurrent.futures
import statistics
import time
import uuid

import numpy as np
import torch

from app.core.engine import Mode, SynthesisRequest

TEXT = "今天天气很好，我们一起去公园散步吧。"  # 18 characters, ~4.5 s of speech
SPEAKER = "中文女"
V3_SYSTEM = "You are a helpful assistant.<|endofprompt|>"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def concurrently(n: int, job) -> tuple[float, list]:
    """(wall seconds, results) of ``n`` copies of ``job(i)`` started together."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        started = time.perf_counter()
        results = list(pool.map(job, range(n)))
    return time.perf_counter() - started, results


def llm_steps(engine, batches: tuple[int, ...] = (1, 2, 4, 8), steps: int = 12) -> dict:
    """Median ms of one decode step (forward, speech head, sampling): upstream's ``forward_one_step`` for one
    request, and the engine's batched step for each batch size (``"upstream"`` and the sizes as keys), and
    ``"piece"``: one prompt piece of ``PREFILL_PIECE`` positions (what a joining request costs the others)."""
    from app.engines.cosyvoice.batching import PREFILL_PIECE
    from app.engines.cosyvoice.llm import Decoding, LMInput, TokenStream

    lm, llm = engine.pipeline.lm, engine.pipeline.lm.llm
    text, _ = engine._model.frontend._extract_text_token(TEXT if engine.generation == 2 else V3_SYSTEM + TEXT)
    empty = torch.zeros(1, 0, dtype=torch.int32)
    request, device = LMInput(text, empty, empty), lm.device
    times: dict = {"upstream": [], "piece": []} | {batch: [] for batch in batches}
    with lm.context():
        prompt = lm.prompt(request)
        mask = torch.ones(1, prompt.shape[1], prompt.shape[1], dtype=torch.bool, device=device).tril()
        _, theirs = llm.llm.forward_one_step(prompt, masks=mask, cache=None)
        one = torch.ones(1, 1, 1, dtype=torch.bool, device=device)
        for i in range(steps):
            step_input = llm.speech_embedding.weight[i + 1].reshape(1, 1, -1)
            synchronize()
            started = time.perf_counter()
            hidden, theirs = llm.llm.forward_one_step(step_input, masks=one, cache=theirs)
            logp = llm.llm_decoder(hidden[:, -1]).log_softmax(dim=-1)
            llm.sampling_ids(logp.squeeze(dim=0), [], 25, ignore_eos=True)
            synchronize()
            times["upstream"].append(time.perf_counter() - started)
        for batch in batches:
            rows = [Decoding(request, torch.Generator().manual_seed(r), TokenStream(), bool) for r in range(batch)]
            for row in rows:
                row.min_len = steps + 1  # no stop while measured
                lm.choose(row, lm.log_probs(lm.prefill(row, 1 << 30))[0])
            for _ in range(steps):
                synchronize()
                started = time.perf_counter()
                scores = lm.log_probs(lm.decode(rows))
                for r, row in enumerate(rows):
                    lm.choose(row, scores[r])
                synchronize()
                times[batch].append(time.perf_counter() - started)
        long = LMInput(torch.cat([text] * 8, dim=1), empty, empty)  # a prompt longer than two pieces
        for _ in range(3):
            row = Decoding(long, torch.Generator(), TokenStream(), bool)
            lm.prefill(row, PREFILL_PIECE)
            synchronize()
            started = time.perf_counter()
            lm.prefill(row, PREFILL_PIECE)
            synchronize()
            times["piece"].append(time.perf_counter() - started)
    return {key: statistics.median(values) * 1000 for key, values in times.items()}


def chunk_costs(engine, voice: dict, tokens: int = 400, hop: int = 50) -> list[tuple[float, float, float]]:
    """Seconds of token-to-wave (flow + vocoder) for each chunk k: the engine with a chunked last chunk, the
    engine with upstream's (a whole pass), and upstream's ``token2wav`` on the same chunks (its streaming:
    the flow over the prompt and every token so far at every chunk)."""
    from app.engines.cosyvoice.llm import LMInput, TokenStream
    from app.engines.cosyvoice.pipeline import StreamOptions, Utterance

    pipeline, model = engine.pipeline, engine._model.model
    speech = torch.randint(0, 6561, (1, tokens), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    prompt, feat, embedding = voice["flow_prompt_speech_token"], voice["prompt_speech_feat"], voice["flow_embedding"]
    utterance = Utterance(LMInput.empty(), prompt, feat, embedding)
    kept, ours = pipeline.options, {}
    for tail in ("chunked", "full"):
        pipeline.options = StreamOptions(hop, hop, tail, kept.prompt_cache_bytes)
        stream = TokenStream()
        for token in speech[0].tolist():
            stream.put(token)
        stream.finish()
        vocoder, ours[tail], started = pipeline.vocoder(pipeline.generators(0)), [], time.perf_counter()
        for _ in pipeline._stream(utterance, stream, vocoder, bool):
            synchronize()
            ours[tail].append(time.perf_counter() - started)
            started = time.perf_counter()
    pipeline.options = kept
    session, offset, upstream, device = uuid.uuid4().hex, 0, [], pipeline.device
    this_hop = hop + (-prompt.shape[1] % pipeline.chunk)
    model.hift_cache_dict[session] = None
    try:
        with torch.inference_mode():
            while True:
                final = tokens - offset < this_hop + pipeline.flow.pre_lookahead_len
                end = tokens if final else offset + this_hop + pipeline.flow.pre_lookahead_len
                started = time.perf_counter()
                model.token2wav(
                    token=speech[:, :end],
                    prompt_token=prompt.to(device),
                    prompt_feat=feat.to(device),
                    embedding=embedding.to(device),
                    token_offset=offset,
                    uuid=session,
                    stream=not final,
                    finalize=final,
                )  # fmt: skip  (upstream's last chunk: stream=False, as its tts calls it)
                synchronize()
                upstream.append(time.perf_counter() - started)
                if final:
                    break
                offset, this_hop = offset + this_hop, hop
    finally:
        model.hift_cache_dict.pop(session, None)
    return list(zip(ours["chunked"], ours["full"], upstream, strict=False))


def engine_run(engine, voice: dict, stream: bool, seed: int) -> tuple[float, float]:
    """(first audio s, audio s) of one request straight to the engine."""
    mode = Mode.SFT if "embedding" in voice else Mode.ZERO_SHOT
    request = SynthesisRequest(mode, TEXT, voice=voice, stream=stream, seed=seed)
    started, first, samples = time.perf_counter(), None, 0
    for chunk in engine.synthesize(request):
        first = first if first is not None else time.perf_counter() - started
        samples += chunk.size
    return first, samples / engine.sample_rate


def upstream_run(engine, spk_id: str, stream: bool) -> tuple[float, float]:
    """(first audio s, audio s) of upstream's own inference_sft / inference_zero_shot on the same model."""
    model = engine._model
    started, first, samples = time.perf_counter(), None, 0
    if spk_id == SPEAKER:
        text = TEXT if engine.generation == 2 else V3_SYSTEM + TEXT
        outputs = model.inference_sft(text, spk_id, stream=stream)
    else:
        outputs = model.inference_zero_shot(TEXT, "", "", zero_shot_spk_id=spk_id, stream=stream)
    for out in outputs:
        first = first if first is not None else time.perf_counter() - started
        samples += out["tts_speech"].shape[1]
    return first, samples / model.sample_rate


def at_once(n: int, job) -> dict:
    """First audio (median, max) and aggregate RTF of ``n`` requests ``job(i)`` started together."""
    wall, results = concurrently(n, job)
    firsts = [r[0] for r in results]
    return {
        "first": statistics.median(firsts),
        "first_max": max(firsts),
        "rtf": wall / sum(r[1] for r in results),
        "audio": sum(r[1] for r in results),
    }


def synthetic_prompt(seconds: float = 5.0):
    """A voiced, speech-like prompt (a gliding harmonic tone with syllable-rate bursts) as PromptAudio: the
    random models do not care what the prompt says, and the GPU machine has no espeak."""
    import soxr

    from app.core.audio import PROMPT_RATE, WIDE_RATE, PromptAudio

    t = np.arange(int(seconds * WIDE_RATE)) / WIDE_RATE
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / WIDE_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2)
    wide = (0.8 * wave / np.abs(wave).max()).astype(np.float32)
    narrow = soxr.resample(wide, WIDE_RATE, PROMPT_RATE).astype(np.float32)
    return PromptAudio(samples=narrow, speech_seconds=seconds, wideband=wide)


def tail_difference(engine, voice: dict, tokens: int = 200) -> dict:
    """How far the chunked last chunk (COSYVOICE_STREAM_TAIL=chunked: the streaming flow) is from upstream's
    (its non-streaming flow over the whole utterance), on the same tokens: the last chunk's mel and audio."""
    from app.engines.cosyvoice.flow_streams import ChunkedStream, upstream_flow
    from app.engines.cosyvoice.llm import LMInput
    from app.engines.cosyvoice.pipeline import Utterance

    pipeline = engine.pipeline
    speech = torch.randint(0, 6561, (1, tokens), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    speech = speech.to(pipeline.device)
    prompt, feat, embedding = voice["flow_prompt_speech_token"], voice["prompt_speech_feat"], voice["flow_embedding"]
    utterance = Utterance(LMInput.empty(), prompt, feat, embedding)
    cuts = list(range(25 + -prompt.shape[1] % pipeline.chunk, tokens - 23, 50))  # 50-token chunks, then the rest
    results = {}
    with torch.inference_mode(), torch.autocast("cuda", enabled=pipeline.fp16):  # as the pipeline's flow runs
        for tail in ("full", "chunked"):
            stream, vocoder, previous = ChunkedStream(pipeline, utterance), pipeline.vocoder(pipeline.generators(0)), 0
            for cut in cuts:
                vocoder(stream(speech[:, previous:cut], speech[:, cut : cut + 3]), finalize=False)
                previous = cut
            if tail == "full":
                mel = upstream_flow(pipeline.flow, speech, utterance, streaming=False, finalize=True)
                mel = mel[:, :, previous * pipeline.flow.token_mel_ratio :]
            else:
                mel = stream(speech[:, previous:], None)
            results[tail] = (mel, vocoder(mel, finalize=True).reshape(-1))
    (mel_full, wave_full), (mel_chunked, wave_chunked) = results["full"], results["chunked"]
    return {
        "tokens": tokens - previous,
        "mel_max": float((mel_full - mel_chunked).abs().max()),
        "mel_rms_ratio": float((mel_full - mel_chunked).pow(2).mean().sqrt() / mel_full.std()),
        "audio_rms_ratio": float((wave_full - wave_chunked).pow(2).mean().sqrt() / wave_full.pow(2).mean().sqrt()),
    }
