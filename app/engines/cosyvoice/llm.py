"""The LLM stage: upstream's Qwen2LM / CosyVoice3LM decoding, for many requests at once, into TokenStreams.

The same loop as upstream's ``Qwen2LM.inference`` + ``inference_wrapper`` (prompt layout, min/max length,
stop tokens) with three differences that do not change a token:

- each step runs the Qwen2 *model*'s layers and takes its last hidden state; upstream calls
  ``Qwen2ForCausalLM`` with ``output_hidden_states=True``, which also computes logits over Qwen's 151,936
  text ids and throws them away (a quarter of a step at full size);
- a decode step runs every request in the batch (``Decoding``, each with its own keys and values and its own
  position) through each layer's projections and MLP at once, so the weights are read once per step for all
  of them; attention runs per request, against that request's keys alone (``batching.py`` schedules it);
- sampling (upstream's RAS: nucleus sampling, re-drawn from the whole distribution when the token repeats
  within the window) draws from the request's own ``torch.Generator``, not the process-wide RNG, so a seed
  gives the same tokens whatever else runs. Drawn in upstream's order, it gives upstream's tokens.

Upstream's own ``inference`` runs instead with upstream's vLLM loaded (COSYVOICE_LOAD_VLLM), and with the
June 2025 code of the ``cosyvoice2-fr-infer`` wheel, whose LLM samples differently (``sos_eos``, re-drawn
end tokens); its sampling draws from the process-wide RNG, set from the request's generator when it starts.
"""

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb, eager_attention_forward

from app.engines.cosyvoice.caches import KeyValues

log = logging.getLogger(__name__)

PROMPT_MARK_ID = 151646  # <|endofprompt|>: upstream's CosyVoice3LM asserts it is in the text
MAX_SILENT = 5  # upstream's llm_job: more than this many silent tokens in a row are dropped


@dataclass(frozen=True)
class LMInput:
    text: torch.Tensor  # (1, n) text token ids of the sentence
    prompt_text: torch.Tensor  # (1, m): the voice's transcript, or an instruction (may be empty)
    prompt_speech: torch.Tensor  # (1, k) the voice's speech tokens for the LLM (may be empty)

    @classmethod
    def empty(cls) -> "LMInput":
        none = torch.zeros(1, 0, dtype=torch.int32)
        return cls(none, none, none)


class LMFailure(RuntimeError):
    """The LLM stage failed; ``__cause__`` is what it raised."""


class TokenStream:
    """Speech tokens handed from the LLM stage to the token-to-wave stage; the consumer waits, never polls."""

    def __init__(self):
        self._tokens: list[int] = []
        self._done = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    def put(self, token: int) -> None:
        with self._changed:
            self._tokens.append(token)
            self._changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The stream is over (with ``error``, it failed); the first call counts."""
        with self._changed:
            if self._done:
                return
            self._done, self._error = True, error
            self._changed.notify_all()

    def wait_for(self, count: int) -> tuple[list[int], bool]:
        """(tokens so far, whether there will be no more), once there are ``count`` or the stream is over."""
        with self._changed:
            self._changed.wait_for(lambda: self._done or len(self._tokens) >= count)
            if self._error is not None:
                raise LMFailure(f"{type(self._error).__name__}: {self._error}") from self._error
            return list(self._tokens), self._done

    def wait_closed(self) -> None:
        """Until the LLM stage has let go of this stream (after a stop, at its next step)."""
        with self._changed:
            self._changed.wait_for(lambda: self._done)


class Decoding:
    """One request in the LLM stage: its prompt not yet run, its keys and values, its sampling state."""

    def __init__(self, request: LMInput, generator: torch.Generator, out: TokenStream, stop: Callable[[], bool]):
        self.request, self.generator, self.out, self.stop = request, generator, out, stop
        text = request.text.shape[1]
        self.min_len, self.max_len = text * 2, text * 20  # upstream's speech tokens per text token
        self.pending: torch.Tensor | None = None  # (1, n, hidden) prompt positions not yet run
        self.prefill_cache = None  # the Qwen2 model's own cache while the prompt runs
        self.layers: list[KeyValues] = []  # then each layer's keys and values, grown in place
        self.length = 0  # positions in the cache
        self.next_input: torch.Tensor | None = None  # (1, hidden) the last token's embedding
        self.decoded: list[int] = []
        self.silent_run = 0

    @property
    def prefilled(self) -> bool:
        return self.pending is not None and self.pending.shape[1] == 0

    @property
    def exhausted(self) -> bool:
        """Upstream's maximum length reached: it decodes no further."""
        return len(self.decoded) >= self.max_len


class SpeechLM:
    """Upstream's speech-token LLM (``model.llm``), stepped without its text head."""

    def __init__(self, llm, silent_tokens: list[int], fp16: bool = False):
        self.llm = llm
        self.silent = frozenset(silent_tokens)
        self.v3 = type(llm).__name__ == "CosyVoice3LM"  # upstream tells them apart by class name too
        self.fp16 = fp16 and torch.cuda.is_available()
        # vLLM and the fr-infer wheel's LLM (no sos: the June 2025 layout) decode with upstream's own loop
        self.own_loop = not hasattr(llm, "vllm") and hasattr(llm, "sos")
        sampling = llm.sampling  # functools.partial(ras_sampling, top_p=..., top_k=..., win_size=..., tau_r=...)
        if getattr(getattr(sampling, "func", None), "__name__", "") != "ras_sampling":
            raise ValueError(f"the model's LLM samples with {sampling!r}; this engine implements ras_sampling")
        self.top_p = sampling.keywords.get("top_p", 0.8)
        self.top_k = sampling.keywords.get("top_k", 25)
        self.win_size = sampling.keywords.get("win_size", 10)
        self.tau_r = sampling.keywords.get("tau_r", 0.1)
        # as upstream's llm_context: the LLM's kernels queue on a CUDA stream of their own, beside the flow's
        self.cuda_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.qwen = llm.llm.model.model if self.own_loop else None  # Qwen2ForCausalLM.model: layers, norm
        if self.qwen is not None:
            implementation = self.qwen.config._attn_implementation
            self._attention = (
                eager_attention_forward if implementation == "eager" else ALL_ATTENTION_FUNCTIONS[implementation]
            )

    @property
    def device(self) -> torch.device:
        return self.llm.llm_decoder.weight.device

    def context(self):
        """Where the LLM's work runs: its own CUDA stream (after what the default stream queued), autocast."""
        if self.cuda_stream is not None:  # whatever made the inputs on the default stream is done first
            self.cuda_stream.wait_stream(torch.cuda.default_stream(self.device))
        autocast = torch.autocast("cuda", enabled=self.fp16 and not hasattr(self.llm, "vllm"))
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.stream(self.cuda_stream))
        stack.enter_context(autocast)
        stack.enter_context(torch.inference_mode())
        return stack

    # -- upstream's own loop (vLLM, the fr-infer wheel): a thread per request ----------------------------------
    def run_upstream(self, request: LMInput, generator: torch.Generator, out: TokenStream, stop) -> None:
        """Decode ``request`` into ``out`` with upstream's ``llm.inference`` (a thread's body)."""
        silent_run = 0
        try:
            with self.context():
                for token in self._upstream_tokens(request, generator):
                    if stop():
                        break
                    silent_run = silent_run + 1 if token in self.silent else 0
                    if silent_run <= MAX_SILENT:
                        out.put(token)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            log.error("the LLM stage failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            out.finish(exc)
        else:
            out.finish()

    def _upstream_tokens(self, request: LMInput, generator: torch.Generator) -> Iterator[int]:
        device = self.device
        text, prompt_text = request.text.to(device), request.prompt_text.to(device)
        prompt_speech = request.prompt_speech.to(device)

        def length(t: torch.Tensor) -> torch.Tensor:
            return torch.tensor([t.shape[1]], dtype=torch.int32, device=t.device)

        empty = torch.zeros(0, 192, device=device)
        if device.type == "cuda":  # its sampling runs on the GPU (drawn first: the CPU RNG will not move)
            torch.cuda.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        torch.set_rng_state(generator.get_state())  # upstream samples from the global RNG
        yield from self.llm.inference(
            text=text, text_len=length(text), prompt_text=prompt_text, prompt_text_len=length(prompt_text),
            prompt_speech_token=prompt_speech, prompt_speech_token_len=length(prompt_speech), embedding=empty,
            uuid=uuid.uuid4().hex,  # vLLM's request id
        )  # fmt: skip
        generator.set_state(torch.get_rng_state())  # the request's next sentence goes on from here

    # -- this engine's loop: prompt, prefill, batched decode steps, sampling -----------------------------------
    def prompt(self, request: LMInput) -> torch.Tensor:
        """The LLM's input sequence, as upstream lays it out: sos, prompt text + text, task id, prompt speech."""
        llm, device = self.llm, self.device
        joined = torch.concat([request.prompt_text, request.text], dim=1).to(device)
        if self.v3 and not bool((joined == PROMPT_MARK_ID).any()):
            raise ValueError("CosyVoice3 needs <|endofprompt|> in the text or the prompt text")
        embed = llm.speech_embedding.weight if self.v3 else llm.llm_embedding.weight
        parts = [embed[llm.sos].reshape(1, 1, -1), llm.llm.model.model.embed_tokens(joined)]
        parts.append(embed[llm.task_id].reshape(1, 1, -1))
        if request.prompt_speech.shape[1] != 0:
            parts.append(llm.speech_embedding(request.prompt_speech.to(device)))
        return torch.concat(parts, dim=1)

    def prefill(self, decoding: Decoding, most: int) -> torch.Tensor | None:
        """Run up to ``most`` of the prompt's positions not yet run; the last hidden state (1, hidden) once the
        whole prompt has run (its keys and values then move to per-layer stores for decode steps)."""
        if decoding.pending is None:
            decoding.pending = self.prompt(decoding.request)
        piece, decoding.pending = decoding.pending[:, :most], decoding.pending[:, most:]
        hidden, decoding.prefill_cache = self._forward(piece, decoding.prefill_cache)
        decoding.length += piece.shape[1]
        if not decoding.prefilled:
            return None
        cache, decoding.prefill_cache = decoding.prefill_cache, None
        for keys, values in zip(cache.key_cache, cache.value_cache, strict=True):
            store = KeyValues()
            store.extend(keys, values)
            decoding.layers.append(store)
        return hidden[:, -1]

    def _forward(self, lm_input: torch.Tensor, cache):
        """Qwen2Encoder.forward_one_step, minus the text head: the same inputs, the same last hidden state."""
        seen = 0 if cache is None else cache.get_seq_length()
        masks = torch.ones((1, seen + lm_input.shape[1]), device=lm_input.device, dtype=torch.bool)
        out = self.qwen(inputs_embeds=lm_input, attention_mask=masks, past_key_values=cache, use_cache=True)
        return out.last_hidden_state, out.past_key_values

    def decode(self, batch: list[Decoding]) -> torch.Tensor:
        """One step for every request in ``batch``: each one's last token in, its last hidden state (B, hidden)
        out. Per request the arithmetic of the Qwen2 model's own step (``Qwen2DecoderLayer.forward``)."""
        qwen = self.qwen
        x = torch.stack([d.next_input for d in batch])  # (B, 1, hidden)
        positions = torch.tensor([[d.length] for d in batch], device=x.device)
        cos, sin = qwen.rotary_emb(x, positions)
        for i, layer in enumerate(qwen.layers):
            attn = layer.self_attn
            normed = layer.input_layernorm(x)
            shape = (len(batch), 1, -1, attn.head_dim)
            query = attn.q_proj(normed).view(shape).transpose(1, 2)
            key = attn.k_proj(normed).view(shape).transpose(1, 2)
            value = attn.v_proj(normed).view(shape).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            heads = []
            for row, decoding in enumerate(batch):  # each request against its own keys and values
                keys, values = decoding.layers[i].extend(key[row : row + 1], value[row : row + 1])
                out, _ = self._attention(attn, query[row : row + 1], keys, values, None, scaling=attn.scaling)
                heads.append(out)
            x = x + attn.o_proj(torch.cat(heads).reshape(len(batch), 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        for decoding in batch:
            decoding.length += 1
        return qwen.norm(x)[:, -1]

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> (B, speech ids) log-probabilities, on the CPU where sampling runs."""
        return self.llm.llm_decoder(hidden).log_softmax(dim=-1).float().cpu()

    def choose(self, decoding: Decoding, scores: torch.Tensor) -> int | None:
        """The request's next token from its log-probabilities, or None when it has ended (a stop token, or
        upstream's maximum length); the token becomes its next input."""
        ignore_eos = len(decoding.decoded) < decoding.min_len
        token = self._sample(scores, decoding.decoded, decoding.generator, ignore_eos)
        if token in self.llm.stop_token_ids:
            return None
        decoding.decoded.append(token)
        decoding.next_input = self.llm.speech_embedding.weight[token].reshape(1, -1)
        return token

    # -- upstream's sampling_ids + ras_sampling, drawing from a generator -------------------------------------
    def _sample(self, scores: torch.Tensor, decoded: list[int], generator, ignore_eos: bool) -> int:
        if ignore_eos:
            scores[self.llm.speech_token_size] = -float("inf")  # upstream masks this id, also on CosyVoice3
        token = self._nucleus(scores, generator)
        repeats = sum(1 for previous in decoded[-self.win_size :] if previous == token)
        if repeats >= self.win_size * self.tau_r:
            scores[token] = -float("inf")
            token = int(scores.softmax(dim=0).multinomial(1, replacement=True, generator=generator).item())
        return token

    def _nucleus(self, scores: torch.Tensor, generator) -> int:
        values, indices = scores.softmax(dim=0).sort(descending=True, stable=True)
        head = values[: self.top_k].tolist()  # float32 values, exactly
        kept, total, top_p = 0, np.float32(0.0), np.float32(self.top_p)
        while kept < len(head) and total < top_p:  # upstream's loop, in float32 as its tensors add up
            total = np.float32(total + np.float32(head[kept]))
            kept += 1
        probabilities = torch.tensor(head[:kept], dtype=scores.dtype)
        return int(indices[probabilities.multinomial(1, replacement=True, generator=generator)].item())
