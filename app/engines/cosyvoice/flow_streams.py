"""How token chunks become mel in a stream: our chunked flow from the voice's cached prefix, or upstream's own
flow run over every token so far (``upstream_flow``, also the whole-utterance path)."""

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from app.engines.cosyvoice.pipeline import Pipeline, Utterance


def upstream_flow(flow, token: torch.Tensor, utterance: "Utterance", streaming: bool, finalize: bool) -> torch.Tensor:
    device = token.device

    def length(t: torch.Tensor) -> torch.Tensor:
        return torch.tensor([t.shape[1]], dtype=torch.int32, device=device)

    prompt, feat = utterance.prompt_tokens.to(device), utterance.prompt_feat.to(device)
    mel, _ = flow.inference(
        token=token, token_len=length(token), prompt_token=prompt, prompt_token_len=length(prompt),
        prompt_feat=feat, prompt_feat_len=length(feat), embedding=utterance.embedding.to(device),
        streaming=streaming, finalize=finalize,
    )  # fmt: skip
    return mel


class ChunkedStream:
    """Token chunks to mel with the chunked flow, starting from the voice's cached prefix."""

    def __init__(self, pipeline: "Pipeline", utterance: "Utterance"):
        self.chunked, self.solve = pipeline.chunked, pipeline.solve
        self.first = True  # the stream's first chunk runs at once, alone
        self.prefix = pipeline.prefix(utterance)
        device = pipeline.device
        self.prompt = utterance.prompt_tokens.to(device)
        self.feat = utterance.prompt_feat.to(device)
        with torch.autocast("cuda", enabled=pipeline.fp16):
            self.spks = self.chunked.speaker(utterance.embedding.to(device))

    def __call__(self, tokens: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        ratio, start = self.chunked.ratio, self.prefix.tokens
        pending = self.prompt[:, start:]  # the prompt's tail, run with the first chunk
        joined = torch.cat([pending.to(tokens.dtype), tokens], dim=1)
        cond = torch.zeros(1, 80, joined.shape[1] * ratio, device=tokens.device, dtype=self.spks.dtype)
        prompt_frames = self.feat[:, start * ratio :]
        cond[:, :, : prompt_frames.shape[1]] = prompt_frames.transpose(1, 2)
        mel = self.solve(self.chunked.encode(self.prefix, joined, context, cond, self.spks), alone=self.first)
        self.first = False
        return mel[:, :, pending.shape[1] * ratio :]


class RecomputedStream:
    """Upstream's own streaming flow: each chunk runs over the prompt and every token so far."""

    def __init__(self, flow, utterance: "Utterance"):
        self.flow, self.utterance = flow, utterance
        self.tokens: torch.Tensor | None = None

    def __call__(self, tokens: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        offset = 0 if self.tokens is None else self.tokens.shape[1]
        self.tokens = tokens if self.tokens is None else torch.cat([self.tokens, tokens], dim=1)
        token = self.tokens if context is None else torch.cat([self.tokens, context], dim=1)
        mel = upstream_flow(self.flow, token, self.utterance, streaming=True, finalize=context is None)
        return mel[:, :, offset * self.flow.token_mel_ratio :]
