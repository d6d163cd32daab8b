"""One sentence through the two stages: the LLM stage (batched across requests), token-to-wave as tokens arrive.

Streaming follows upstream's chunk schedule (``CosyVoice2Model.tts(stream=True)``): the first chunk is
``first_hop`` tokens plus what aligns the prompt and the chunk with the model's 25-token chunks, each
next chunk twice the last up to ``max_hop``, and every chunk but the last waits for the look-ahead tokens
after it. Every request's LLM stage runs in one ``batching.Scheduler`` per model (or, for comparison and
for upstream's own loop under vLLM, in a thread per request). The token-to-wave stage waits on the LLM
stage's ``TokenStream`` (no polling) and runs each chunk through the chunked flow (``flow.py``: bounded work
per chunk, a voice's prompt run once and kept in ``PromptCache``) and a vocoder that keeps what it needs
(``vocoder.py``). Not streaming is upstream's non-streaming path: the whole utterance through the flow with
full attention, then the vocoder.
"""

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from app.engines.cosyvoice.batching import Gatherer, Scheduler, StepObserver, unobserved
from app.engines.cosyvoice.flow import Chunk, ChunkedFlow, FlowPrefix, chunkable
from app.engines.cosyvoice.flow_streams import ChunkedStream, RecomputedStream, upstream_flow
from app.engines.cosyvoice.llm import LMInput, SpeechLM, TokenStream
from app.engines.cosyvoice.prompts import PromptCache, fingerprint
from app.engines.cosyvoice.vocoder import HiftV2, HiftV3, VocoderJob, vocode, vocode_one

log = logging.getLogger(__name__)

UPSTREAM_HOP = 25  # upstream's token_hop_len: the tokens in its first chunk, and its flows' chunk


@dataclass(frozen=True)
class Utterance:
    """What the two stages need for one sentence."""

    lm: LMInput
    prompt_tokens: torch.Tensor  # (1, p) the voice's speech tokens for the flow (may be empty)
    prompt_feat: torch.Tensor  # (1, 2p, 80) the voice's mel
    embedding: torch.Tensor  # (1, 192) the voice's speaker embedding for the flow


@dataclass(frozen=True)
class Generators:
    llm: torch.Generator  # on the CPU, where sampling runs
    vocoder: torch.Generator  # on the model's device (CosyVoice2's HiFT draws noise there)


@dataclass(frozen=True)
class StreamOptions:
    first_hop: int = UPSTREAM_HOP  # speech tokens in the first chunk (a multiple of the model's chunk, 25)
    max_hop: int = 100  # chunks double up to this many tokens
    # the last chunk: "full" as upstream (its non-streaming flow over the whole utterance, O(utterance)),
    # or "chunked" (the streaming flow, like every other chunk; differs from upstream's in that chunk)
    tail: str = "full"
    prompt_cache_bytes: int = 2 << 30  # voices' flow prefixes kept, least recently used dropped first


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = 4  # requests decoded together (the service's COSYVOICE_MAX_CONCURRENCY)
    batching: bool = True  # False: each request alone (its LLM in a thread of its own, its flow chunks alone)
    gather_wait: float = 0.005  # seconds a batch of flow or vocoder chunks waits at most for other streams'
    observe: StepObserver = unobserved  # told each step's kind, size and seconds (the /metrics door)


class Pipeline:
    """Upstream's loaded ``CosyVoice2Model`` / ``CosyVoice3Model`` modules, driven by this service's loop."""

    def __init__(
        self,
        model,
        options: StreamOptions,
        fp16: bool = False,
        unchunked: str | None = None,
        batch: BatchOptions = BatchOptions(),  # noqa: B008 - frozen
    ):
        # the flow's chunk in tokens; upstream's token_hop_len (25) where the estimator does not say (TensorRT)
        frames = getattr(model.flow.decoder.estimator, "static_chunk_size", 0)
        chunk = frames // model.flow.token_mel_ratio if frames > 0 else UPSTREAM_HOP
        if chunk < 1:
            raise ValueError(f"the flow's chunk ({frames} mel frames) is shorter than one speech token")
        for name in ("first_hop", "max_hop"):
            hop = getattr(options, name)
            if hop <= 0 or hop % chunk:
                raise ValueError(f"the stream's {name} ({hop} tokens) is not a multiple of the model's chunk ({chunk})")
        if options.max_hop < options.first_hop:
            raise ValueError("the stream's max_hop must be at least its first_hop")
        if options.tail not in ("full", "chunked"):
            raise ValueError(f"the stream's tail is 'full' or 'chunked', not {options.tail!r}")
        self.options, self.chunk = options, chunk
        self.flow, self.hift = model.flow, model.hift
        self.fp16 = fp16 and torch.cuda.is_available()
        self.lm = SpeechLM(model.llm, list(getattr(model, "silent_tokens", [])), fp16)
        self.causal_vocoder = hasattr(model.hift, "conv_pre_look_right")  # CosyVoice3's CausalHiFTGenerator
        self.unchunked = unchunked or chunkable(model.flow)
        self.chunked = None if self.unchunked else ChunkedFlow(model.flow)
        if self.unchunked:
            log.warning("the flow streams as upstream does (each chunk over everything before it): %s", self.unchunked)
        self.set_batch(batch)
        self.prompts = PromptCache(options.prompt_cache_bytes)
        self._oversize: set[str] = set()  # voices whose prefix was too big to keep (warned once each)

    @property
    def device(self) -> torch.device:
        return next(self.flow.parameters()).device

    def set_batch(self, options: BatchOptions) -> None:
        """How requests run together from the next one on: the LLM stage in one scheduler for all, or in a
        thread per request (upstream's own loop, under vLLM or the fr-infer wheel, always the latter); the
        chunked flow's and the vocoder's chunks gathered into batches, or each alone."""
        self.batch = options
        batched = options.batching and self.lm.own_loop
        self.scheduler = Scheduler(self.lm, options.max_batch, observe=options.observe) if batched else None
        self.flows = self.vocoders = None
        if options.batching:
            stacked = functools.partial(vocode, observe=options.observe)  # it tells how many ran stacked
            self.vocoders = Gatherer(stacked, options.max_batch, options.gather_wait, unobserved, "vocoder")
            if self.chunked is not None:
                gather = options.max_batch, options.gather_wait, options.observe
                self.flows = Gatherer(self.chunked.solve, *gather, "flow")

    # -- voices ------------------------------------------------------------------------------------------
    def prefix(self, utterance: Utterance) -> FlowPrefix:
        """The voice's flow prefix for one stream to extend: its prompt's whole chunks run once, kept in the
        cache and copied per stream; one too big for the cache is run for each stream."""
        tokens = self.chunked.prefix_tokens(utterance.prompt_tokens.shape[1])
        if tokens == 0:
            return FlowPrefix(0)
        prompt = utterance.prompt_tokens[:, : tokens + self.chunked.lookahead].to(self.device)
        feat = utterance.prompt_feat[:, : tokens * self.chunked.ratio].to(self.device)
        embedding = utterance.embedding.to(self.device)
        key = fingerprint(prompt, feat, embedding)
        kept = self.prompts.get(key)
        if kept is not None:
            return kept.copy()
        prefix = FlowPrefix(0)
        with torch.autocast("cuda", enabled=self.fp16):
            cond = feat.transpose(1, 2).to(embedding.dtype)
            self.chunked.run(prefix, prompt[:, :tokens], prompt[:, tokens:], cond, self.chunked.speaker(embedding))
        if self.prompts.put(key, prefix):
            return prefix.copy()
        if 0 < self.prompts.budget < prefix.nbytes() and key not in self._oversize:
            self._oversize.add(key)
            log.warning(
                "a voice's flow prefix (%d MiB, %d prompt tokens) is over COSYVOICE_PROMPT_CACHE_MB (%d MiB): "
                "it is run again for every stream in this voice", prefix.nbytes() >> 20, tokens,
                self.prompts.budget >> 20,
            )  # fmt: skip
        return prefix  # not kept: this stream's alone

    def warm(self, utterance: Utterance) -> None:
        """Run a new voice's prompt into the cache now (when it is made), not at its first request."""
        if self.chunked is not None and self.prompts.budget > 0:
            self.prefix(utterance)

    # -- speech ------------------------------------------------------------------------------------------
    def vocoder(self, generators: "Generators") -> HiftV2 | HiftV3:
        """One stream's vocoder state (CosyVoice2's draws its noise from the stream's generator)."""
        return HiftV3(self.hift) if self.causal_vocoder else HiftV2(self.hift, generators.vocoder)

    def generators(self, seed: int) -> "Generators":
        """A request's random number generators: one for the LLM's sampling, one for CosyVoice2's vocoder."""
        return Generators(torch.Generator().manual_seed(seed), torch.Generator(device=self.device).manual_seed(seed))

    def speak(
        self,
        utterance: Utterance,
        generators: "Generators",
        stream: bool,
        speed: float = 1.0,
        cancelled: Callable[[], bool] = bool,
    ) -> Iterator[np.ndarray]:
        tokens, stop = TokenStream(), threading.Event()
        self._decode(utterance.lm, generators.llm, tokens, lambda: stop.is_set() or cancelled())
        chunks = None
        try:
            vocoder = self.vocoder(generators)
            if stream:
                chunks = self._stream(utterance, tokens, vocoder, cancelled)
            else:
                chunks = self._whole(utterance, tokens, vocoder, speed, cancelled)
            for chunk in chunks:
                yield chunk.reshape(-1).float().cpu().numpy()
        finally:
            stop.set()
            try:
                if chunks is not None:
                    chunks.close()  # leaves the token-to-wave stage now, not when collected
            finally:
                tokens.wait_closed()  # the LLM stage has dropped this request (its slot is free)

    def _decode(self, request: LMInput, generator: torch.Generator, out: TokenStream, stop) -> None:
        if self.scheduler is not None:
            self.scheduler.submit(request, generator, out, stop)
        elif self.lm.own_loop:  # unbatched: a scheduler of its own, whose thread ends with the request
            Scheduler(self.lm, 1, observe=self.batch.observe).submit(request, generator, out, stop)
        else:
            args = (request, generator, out, stop)
            threading.Thread(target=self.lm.run_upstream, args=args, name="cosyvoice-llm", daemon=True).start()

    def solve(self, chunk: Chunk, alone: bool = False) -> torch.Tensor:
        """One stream's flow chunk to mel: batched with other streams' chunks ready at the same time, or alone
        (a stream's first chunk is never held for a batch: it runs at once)."""
        if self.flows is None:
            return self.chunked.solve([chunk])[0]
        return self.flows.alone(chunk) if alone else self.flows(chunk)

    def _stream(self, utterance: Utterance, tokens: TokenStream, vocoder, cancelled) -> Iterator[torch.Tensor]:
        flow = ChunkedStream(self, utterance) if self.chunked else RecomputedStream(self.flow, utterance)
        with ExitStack() as stage:  # in the stage: a pass may wait (briefly) for this stream's chunks
            for gatherer in (self.flows, self.vocoders):
                if gatherer is not None:
                    stage.enter_context(gatherer.joined())
            yield from self._chunks(utterance, flow, tokens, vocoder, cancelled)

    def _chunks(self, utterance: Utterance, flow, tokens: TokenStream, vocoder, cancelled) -> Iterator[torch.Tensor]:
        lookahead, hop, offset = self.flow.pre_lookahead_len, self.options.first_hop, 0
        pad = -utterance.prompt_tokens.shape[1] % self.chunk  # the first chunk ends on a model chunk
        while not cancelled():
            this_hop = hop + pad if offset == 0 else hop
            have, done = tokens.wait_for(offset + this_hop + lookahead)
            if cancelled():
                return
            if len(have) < offset + this_hop + lookahead:
                if len(have) > offset:
                    mel = self._last_mel(flow, utterance, have, offset)
                    yield self._vocode(vocoder, mel, finalize=True, alone=offset == 0)
                return
            chunk, context = have[offset : offset + this_hop], have[offset + this_hop : offset + this_hop + lookahead]
            with torch.autocast("cuda", enabled=self.fp16):
                mel = flow(self._tensor(chunk), self._tensor(context))
            yield self._vocode(vocoder, mel, finalize=False, alone=offset == 0)
            offset, hop = offset + this_hop, min(self.options.max_hop, hop * 2)

    def _last_mel(self, flow, utterance: Utterance, have: list[int], offset: int) -> torch.Tensor:
        with torch.autocast("cuda", enabled=self.fp16):
            if self.options.tail == "chunked":
                return flow(self._tensor(have[offset:]), None)
            # upstream's streaming makes its last chunk with its non-streaming flow: every token again
            mel = upstream_flow(self.flow, self._tensor(have), utterance, streaming=False, finalize=True)
            return mel[:, :, offset * self.flow.token_mel_ratio :]

    def _tensor(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor([tokens], dtype=torch.int32, device=self.device)

    def _vocode(self, vocoder, mel: torch.Tensor, finalize: bool, speed: float = 1.0, alone=False) -> torch.Tensor:
        """One stream's vocoder chunk: stacked with other streams' of its length ready at the same time, or
        alone (a stream's first chunk runs at once)."""
        job = VocoderJob(vocoder, mel, finalize, speed)
        with torch.autocast("cuda", enabled=self.fp16 and self.causal_vocoder):  # as upstream's token2wav
            if self.vocoders is None:
                return vocode_one(job)
            return self.vocoders.alone(job) if alone else self.vocoders(job)

    def _whole(self, utterance: Utterance, tokens: TokenStream, vocoder, speed: float, cancelled):
        have, _ = tokens.wait_for(float("inf"))
        if not have or cancelled():
            return
        with torch.autocast("cuda", enabled=self.fp16):
            mel = upstream_flow(self.flow, self._tensor(have), utterance, streaming=False, finalize=True)
        yield self._vocode(vocoder, mel, finalize=True, speed=speed, alone=True)
