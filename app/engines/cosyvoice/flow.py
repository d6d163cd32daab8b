"""Speech tokens to mel, chunk by chunk, with the work of every earlier chunk kept (CosyVoice2 and 3).

Upstream streams by running its flow (``CausalMaskedDiffWithXvec`` / ``CausalMaskedDiffWithDiT``
``.inference(streaming=True)``) over the prompt and every token so far at each chunk, then cutting off
what it had already sent: chunk k costs O(k), with the prompt's frames in front every time. Its models are
chunk-causal (a frame sees its own chunk and everything before), so the frames already made never change.
Here each chunk runs upstream's layers over the new tokens only, reading the keys, values and convolution
tails that earlier chunks left (``caches.ChunkState``), which is the same arithmetic. A voice's prompt is
run once into a ``FlowPrefix`` that requests copy (``PromptCache`` keeps them).

Chunks start at multiples of the model's chunk (25 tokens); each chunk but the last is given the next
``pre_lookahead_len`` tokens as context, as upstream does.
"""

import math
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from app.engines.cosyvoice.caches import ChunkState, Rows, causal_conv, chunk_mask
from app.engines.cosyvoice.estimators import dit_is_chunkable, dit_step, unet_is_chunkable, unet_step

TIMESTEPS = 10  # upstream's flow.inference: n_timesteps=10
_POSITIONS = threading.Lock()


# -- CosyVoice2's encoder: UpsampleConformerEncoder --------------------------------------------------------
def _position_table(pos_enc, total: int, like: torch.Tensor) -> torch.Tensor:
    """Upstream's shared relative position table, at least ``total`` positions each way. Its extend_pe checks
    then replaces the table unlocked: two streams at once could leave a shorter one than this stream needs."""
    with _POSITIONS:
        pos_enc.extend_pe(like.new_empty(1, total))
        return pos_enc.pe


def _rel_attention(state: ChunkState, name: str, attn, x: torch.Tensor, pos_enc, visible) -> torch.Tensor:
    """RelPositionMultiHeadedAttention (ESPnet relative positions) for new positions against all before."""
    query, key, value = attn.forward_qkv(x, x, x)
    keys, values = state.keys_values(name).extend(key, value)
    new, total = x.shape[1], keys.shape[2]
    pe = _position_table(pos_enc, total, x)
    center = pe.size(1) // 2  # relative position 0; positive (keys to the left) below it
    pos = pe[:, center - total + 1 : center + new]  # relative positions total-1 .. -(new-1)
    p = attn.linear_pos(pos).view(1, -1, attn.h, attn.d_k).transpose(1, 2)
    query = query.transpose(1, 2)
    with_u = (query + attn.pos_bias_u).transpose(1, 2)
    with_v = (query + attn.pos_bias_v).transpose(1, 2)
    content = torch.matmul(with_u, keys.transpose(-2, -1))
    position = torch.matmul(with_v, p.transpose(-2, -1))
    # the score of new position a against key j reads relative position (start + a) - j: column new-1-a+j
    index = new - 1 - torch.arange(new, device=x.device)[:, None] + torch.arange(total, device=x.device)[None, :]
    position = position.gather(-1, index.expand(*position.shape[:2], new, total))
    scores = (content + position) / math.sqrt(attn.d_k)
    return attn.forward_attention(values, scores, visible[None])


def _conformer(state: ChunkState, name: str, layer, x: torch.Tensor, pos_enc, visible) -> torch.Tensor:
    x = x + layer.dropout(_rel_attention(state, name, layer.self_attn, layer.norm_mha(x), pos_enc, visible))
    return x + layer.ff_scale * layer.dropout(layer.feed_forward(layer.norm_ff(x)))


def _embed(embed, x: torch.Tensor) -> torch.Tensor:
    """LinearNoSubsampling without the position table (attention reads positions itself)."""
    return embed.out(x) * embed.pos_enc.xscale


def _lookahead(state: ChunkState, layer, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """PreLookaheadLayer over new tokens (batch, tokens, channels): conv1 reads the next tokens (the context,
    or zeros at the end), conv2 the two before."""
    inputs = x.transpose(1, 2)
    ahead = inputs if context is None else torch.cat([inputs, context.transpose(1, 2)], dim=2)
    ahead = F.pad(ahead, (0, x.shape[1] + layer.pre_lookahead_len - ahead.shape[2]))
    out = F.leaky_relu(layer.conv1(ahead))
    out = causal_conv(Rows.one(state, out.shape[2]), "lookahead", layer.conv2, out)
    return out.transpose(1, 2) + x


def _encode_v2(flow, state: ChunkState, tokens: torch.Tensor, context, start: int) -> torch.Tensor:
    encoder = flow.encoder
    chunk = encoder.static_chunk_size
    x = _embed(encoder.embed, tokens)
    context = None if context is None else _embed(encoder.embed, context)
    x = _lookahead(state, encoder.pre_lookahead_layer, x, context)
    visible = chunk_mask(start, x.shape[1], chunk, x.device)
    for i, layer in enumerate(encoder.encoders):
        x = _conformer(state, f"enc{i}", layer, x, encoder.embed.pos_enc, visible)
    up = encoder.up_layer
    x = F.interpolate(x.transpose(1, 2), scale_factor=float(up.stride), mode="nearest")
    x = causal_conv(Rows.one(state, x.shape[2]), "upsample", up.conv, x).transpose(1, 2)
    x = _embed(encoder.up_embed, x)
    start, stride = start * up.stride, up.stride
    visible = chunk_mask(start, x.shape[1], chunk * stride, x.device)
    for i, layer in enumerate(encoder.up_encoders):
        x = _conformer(state, f"up{i}", layer, x, encoder.up_embed.pos_enc, visible)
    return flow.encoder_proj(encoder.after_norm(x))


def _v2_is_chunkable(flow) -> str | None:
    encoder = flow.encoder
    if not hasattr(encoder, "up_encoders"):
        return "its flow encoder is not upstream's UpsampleConformerEncoder"
    if encoder.static_chunk_size <= 0:
        return "its flow encoder has no static_chunk_size (it attends to the whole utterance)"
    layers = [*encoder.encoders, *encoder.up_encoders]
    if any(layer.feed_forward_macaron is not None or layer.conv_module is not None for layer in layers):
        return "its flow encoder has macaron or convolution modules"
    if not all(layer.normalize_before for layer in layers) or encoder.global_cmvn is not None:
        return "its flow encoder normalises after its blocks"
    problem = unet_is_chunkable(flow.decoder.estimator)
    if problem is None and flow.decoder.estimator.static_chunk_size != encoder.static_chunk_size * flow.token_mel_ratio:
        return "its encoder's and decoder's chunks do not line up"
    return problem


def _encode_v3(flow, state: ChunkState, tokens: torch.Tensor, context, start: int) -> torch.Tensor:
    return _lookahead(state, flow.pre_lookahead_layer, tokens, context).repeat_interleave(flow.token_mel_ratio, dim=1)


# -- both -------------------------------------------------------------------------------------------------
def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _solve(flow, chunks: list["Chunk"]) -> list[torch.Tensor]:
    """CausalConditionalCFM.forward + solve_euler (classifier-free guidance) over each chunk's new frames, the
    chunks of several streams packed into one pass (``caches.Rows``)."""
    cfm = flow.decoder
    starts = [chunk.prefix.tokens * flow.token_mel_ratio for chunk in chunks]
    lengths = [chunk.mu.shape[2] for chunk in chunks]
    mu, cond = _joined([chunk.mu for chunk in chunks]), _joined([chunk.cond for chunk in chunks])
    spks = _joined([chunk.spks[:, :, None].expand(-1, -1, n) for chunk, n in zip(chunks, lengths, strict=True)])
    frames, dtype = mu.shape[2], spks.dtype
    noise = [cfm.rand_noise[:, :, start : start + n] for start, n in zip(starts, lengths, strict=True)]
    x = _joined(noise).to(mu.device).to(mu.dtype)
    t_span = torch.linspace(0, 1, TIMESTEPS + 1, device=mu.device, dtype=mu.dtype)
    if cfm.t_scheduler == "cosine":
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
    t, dt = t_span[0].unsqueeze(0), t_span[1] - t_span[0]
    x_in = torch.zeros([2, 80, frames], device=x.device, dtype=dtype)
    mu_in, cond_in = torch.zeros_like(x_in), torch.zeros_like(x_in)
    t_in = torch.zeros([2], device=x.device, dtype=dtype)
    spks_in = torch.zeros_like(x_in)
    step = dit_step if hasattr(cfm.estimator, "transformer_blocks") else unet_step
    for i in range(1, len(t_span)):
        x_in[:] = x
        mu_in[0], t_in[:], spks_in[0], cond_in[0] = mu, t, spks, cond
        rows = Rows([chunk.prefix.steps[i - 1] for chunk in chunks], starts, lengths)
        out = step(cfm.estimator, rows, x_in, mu_in, t_in, spks_in, cond_in)
        guided, free = torch.split(out, [1, 1], dim=0)
        x = x + dt * ((1.0 + cfm.inference_cfg_rate) * guided - cfm.inference_cfg_rate * free)
        t = t + dt
        if i < len(t_span) - 1:
            dt = t_span[i + 1] - t
    return list(x.float().split(lengths, dim=2))


def chunkable(flow) -> str | None:
    """Why upstream's flow cannot be run chunk by chunk exactly (None when it can). Decided from the modules
    upstream loaded: it keeps its own flow when COSYVOICE_LOAD_JIT/TRT do not apply (no CUDA, CosyVoice3)."""
    if isinstance(getattr(flow, "encoder", None), torch.jit.ScriptModule):  # CosyVoice3 has none
        return "COSYVOICE_LOAD_JIT put a TorchScript flow encoder in its place"
    if not isinstance(flow.decoder.estimator, torch.nn.Module):
        return "COSYVOICE_LOAD_TRT put a TensorRT estimator in its place"
    if hasattr(flow, "pre_lookahead_layer"):
        return dit_is_chunkable(flow.decoder.estimator)
    return _v2_is_chunkable(flow)


@dataclass
class FlowPrefix:
    """The flow after the part of a voice's prompt that no speech token can change."""

    tokens: int  # prompt tokens run (a multiple of the chunk)
    encoder: ChunkState = field(default_factory=ChunkState)
    steps: list[ChunkState] = field(default_factory=lambda: [ChunkState() for _ in range(TIMESTEPS)])

    def copy(self) -> "FlowPrefix":
        return FlowPrefix(self.tokens, self.encoder.copy(), [step.copy() for step in self.steps])

    def nbytes(self) -> int:
        return self.encoder.nbytes() + sum(step.nbytes() for step in self.steps)


@dataclass(frozen=True)
class Chunk:
    """One stream's chunk between the flow's encoder and its ODE solve (which several streams share)."""

    prefix: FlowPrefix
    tokens: int
    mu: torch.Tensor  # (1, 80, frames)
    spks: torch.Tensor  # (1, 80)
    cond: torch.Tensor  # (1, 80, frames)


class ChunkedFlow:
    """Upstream's flow module run chunk by chunk."""

    def __init__(self, flow):
        self.flow = flow
        self.chunk = flow.decoder.estimator.static_chunk_size // flow.token_mel_ratio
        self.ratio = flow.token_mel_ratio
        self.lookahead = flow.pre_lookahead_len
        self._encode = _encode_v3 if hasattr(flow, "pre_lookahead_layer") else _encode_v2

    def speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def prefix_tokens(self, prompt_tokens: int) -> int:
        """How many prompt tokens a voice can run ahead: whole chunks whose look-ahead stays in the prompt."""
        return max(0, (prompt_tokens - self.lookahead) // self.chunk) * self.chunk

    @torch.inference_mode()
    def encode(self, prefix: FlowPrefix, tokens, context, cond, spks) -> Chunk:
        """``tokens`` (1, n) following what ``prefix`` holds through the encoder, ready to solve."""
        flow = self.flow
        embedded = flow.input_embedding(torch.clamp(tokens, min=0))
        context = None if context is None else flow.input_embedding(torch.clamp(context, min=0))
        mu = self._encode(flow, prefix.encoder, embedded, context, prefix.tokens)
        return Chunk(prefix, tokens.shape[1], mu.transpose(1, 2).contiguous(), spks, cond)

    @torch.inference_mode()
    def solve(self, chunks: list[Chunk]) -> list[torch.Tensor]:
        """Each chunk's mel (1, 80, frames), its stream's prefix then holding it too; the chunks of different
        streams (one each) in one pass."""
        mels = _solve(self.flow, chunks)
        for chunk in chunks:
            chunk.prefix.tokens += chunk.tokens
        return mels

    def run(self, prefix: FlowPrefix, tokens, context, cond, spks) -> torch.Tensor:
        """Mel (1, 80, frames) of ``tokens`` (1, n) following what ``prefix`` holds, which it then holds too."""
        return self.solve([self.encode(prefix, tokens, context, cond, spks)])[0]
