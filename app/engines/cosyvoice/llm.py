"""The LLM stage: upstream's Qwen2LM / CosyVoice3LM decoding, one request at a time, into a TokenStream.

The same loop as upstream's ``Qwen2LM.inference`` + ``inference_wrapper`` (prompt layout, min/max length,
stop tokens) with two differences that do not change a token:

- each step runs the Qwen2 *model* (``Qwen2ForCausalLM.model``) and takes its last hidden state; upstream
  calls ``Qwen2ForCausalLM`` with ``output_hidden_states=True``, which also computes logits over Qwen's
  151,936 text ids and throws them away (a quarter of a step at full size);
- sampling (upstream's RAS: nucleus sampling, re-drawn from the whole distribution when the token repeats
  within the window) draws from the request's own ``torch.Generator``, not the process-wide RNG, so a seed
  gives the same tokens whatever else runs. Drawn in upstream's order, it gives upstream's tokens.

Upstream's own ``inference`` runs instead with upstream's vLLM loaded (COSYVOICE_LOAD_VLLM), and with the
June 2025 code of the ``cosyvoice2-fr-infer`` wheel, whose LLM samples differently (``sos_eos``, re-drawn
end tokens); its sampling draws from the process-wide RNG, set from the request's generator when it starts.
"""

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

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
        with self._changed:
            self._done, self._error = True, error
            self._changed.notify_all()

    def wait_for(self, count: int) -> tuple[list[int], bool]:
        """(tokens so far, whether there will be no more), once there are ``count`` or the stream is over."""
        with self._changed:
            self._changed.wait_for(lambda: self._done or len(self._tokens) >= count)
            if self._error is not None:
                raise LMFailure(f"{type(self._error).__name__}: {self._error}") from self._error
            return list(self._tokens), self._done


class SpeechLM:
    """Upstream's speech-token LLM (``model.llm``), stepped without its text head."""

    def __init__(self, llm, silent_tokens: list[int], fp16: bool = False):
        self.llm = llm
        self.silent = frozenset(silent_tokens)
        self.v3 = type(llm).__name__ == "CosyVoice3LM"  # upstream tells them apart by class name too
        self.fp16 = fp16 and torch.cuda.is_available()
        sampling = llm.sampling  # functools.partial(ras_sampling, top_p=..., top_k=..., win_size=..., tau_r=...)
        if getattr(getattr(sampling, "func", None), "__name__", "") != "ras_sampling":
            raise ValueError(f"the model's LLM samples with {sampling!r}; this engine implements ras_sampling")
        self.top_p = sampling.keywords.get("top_p", 0.8)
        self.top_k = sampling.keywords.get("top_k", 25)
        self.win_size = sampling.keywords.get("win_size", 10)
        self.tau_r = sampling.keywords.get("tau_r", 0.1)
        # as upstream's llm_context: the LLM's kernels queue on a CUDA stream of their own, beside the flow's
        self.cuda_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def device(self) -> torch.device:
        return self.llm.llm_decoder.weight.device

    def run(self, request: LMInput, generator: torch.Generator, out: TokenStream, stop: Callable[[], bool]) -> None:
        """Decode ``request`` into ``out`` (the LLM thread's body); ends early once ``stop()`` is true."""
        silent_run = 0
        try:
            autocast = torch.autocast("cuda", enabled=self.fp16 and not hasattr(self.llm, "vllm"))
            if self.cuda_stream is not None:  # whatever made the inputs on the default stream is done first
                self.cuda_stream.wait_stream(torch.cuda.default_stream(self.device))
            with torch.cuda.stream(self.cuda_stream), autocast:
                for token in self.tokens(request, generator):
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

    @torch.inference_mode()
    def tokens(self, request: LMInput, generator: torch.Generator) -> Iterator[int]:
        llm, device = self.llm, self.device
        text, prompt_text = request.text.to(device), request.prompt_text.to(device)
        prompt_speech = request.prompt_speech.to(device)
        if hasattr(llm, "vllm") or not hasattr(llm, "sos"):
            yield from self._upstream_tokens(text, prompt_text, prompt_speech, generator)
            return
        lm_input = self.prompt(text, prompt_text, prompt_speech)
        min_len, max_len = int(text.shape[1] * 2), int(text.shape[1] * 20)  # upstream's token/text ratios
        decoded: list[int] = []
        cache = None
        for i in range(max_len):
            hidden, cache = self._step(lm_input, cache)
            logp = llm.llm_decoder(hidden[:, -1]).log_softmax(dim=-1).squeeze(dim=0)
            token = self._sample(logp.float().cpu(), decoded, generator, ignore_eos=i < min_len)
            if token in llm.stop_token_ids:
                break
            yield token
            decoded.append(token)
            lm_input = llm.speech_embedding.weight[token].reshape(1, 1, -1)

    def prompt(self, text: torch.Tensor, prompt_text: torch.Tensor, prompt_speech: torch.Tensor) -> torch.Tensor:
        """The LLM's input sequence, as upstream lays it out: sos, prompt text + text, task id, prompt speech."""
        llm = self.llm
        joined = torch.concat([prompt_text, text], dim=1)
        if self.v3 and not bool((joined == PROMPT_MARK_ID).any()):
            raise ValueError("CosyVoice3 needs <|endofprompt|> in the text or the prompt text")
        embed = llm.speech_embedding.weight if self.v3 else llm.llm_embedding.weight
        parts = [embed[llm.sos].reshape(1, 1, -1), llm.llm.model.model.embed_tokens(joined)]
        parts.append(embed[llm.task_id].reshape(1, 1, -1))
        if prompt_speech.shape[1] != 0:
            parts.append(llm.speech_embedding(prompt_speech))
        return torch.concat(parts, dim=1)

    def _step(self, lm_input: torch.Tensor, cache):
        """Qwen2Encoder.forward_one_step, minus the text head: the same inputs, the same last hidden state."""
        masks = torch.ones((1, lm_input.shape[1]), device=lm_input.device, dtype=torch.bool)
        qwen = self.llm.llm.model.model  # Qwen2ForCausalLM.model: the decoder layers and the final norm
        out = qwen(inputs_embeds=lm_input, attention_mask=masks, past_key_values=cache, use_cache=True)
        return out.last_hidden_state, out.past_key_values

    def _upstream_tokens(self, text, prompt_text, prompt_speech, generator: torch.Generator) -> Iterator[int]:
        def length(t: torch.Tensor) -> torch.Tensor:
            return torch.tensor([t.shape[1]], dtype=torch.int32, device=t.device)

        empty = torch.zeros(0, 192, device=text.device)
        if text.device.type == "cuda":  # its sampling runs on the GPU (drawn first: the CPU RNG will not move)
            torch.cuda.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        torch.set_rng_state(generator.get_state())  # upstream samples from the global RNG
        yield from self.llm.inference(
            text=text, text_len=length(text), prompt_text=prompt_text, prompt_text_len=length(prompt_text),
            prompt_speech_token=prompt_speech, prompt_speech_token_len=length(prompt_speech), embedding=empty,
            uuid=uuid.uuid4().hex,  # vLLM's request id
        )  # fmt: skip
        generator.set_state(torch.get_rng_state())  # the request's next sentence goes on from here

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
