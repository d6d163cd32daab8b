"""One step of upstream's flow-matching estimators over a chunk of new frames, with the state of earlier chunks.

The same arithmetic as ``CausalConditionalDecoder.forward`` (CosyVoice2's U-Net) and ``DiT.forward``
(CosyVoice3) with ``streaming=True``, using their own layers and weights, for each row's new frames
(``caches.Rows``: one chunk per stream, packed along the frame axis, so that several streams' chunks run
in one pass): attention reads the row's stored keys and values of every earlier frame, causal
convolutions read the stored tail of their input. Inputs are unpadded, so upstream's masks are all ones
and multiplying by them is left out.
"""

import torch
import torch.nn.functional as F
from einops import pack

from app.engines.cosyvoice.caches import Rows, causal_conv


def _mask_bias(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Upstream's ``mask_to_bias``: 0 where a frame is seen, -1e10 where it is not."""
    return (1.0 - visible.to(dtype)) * -1.0e10


# -- CosyVoice2: CausalConditionalDecoder (a U-Net of causal ResNet blocks and transformer blocks) ---------
def _causal_block(rows: Rows, name: str, block, x: torch.Tensor) -> torch.Tensor:
    conv, *rest = block.block  # CausalConv1d, Transpose, LayerNorm, Transpose, Mish
    x = causal_conv(rows, name, conv, x)
    for layer in rest:
        x = layer(x)
    return x


def _resnet(rows: Rows, name: str, resnet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    h = _causal_block(rows, f"{name}.1", resnet.block1, x)
    h = h + resnet.mlp(t).unsqueeze(-1)
    h = _causal_block(rows, f"{name}.2", resnet.block2, h)
    return h + resnet.res_conv(x)


def _attend(rows: Rows, name: str, attn, query, key, value, masks: list) -> torch.Tensor:
    """Multi-head attention of each row's new frames against every frame its stream kept and themselves, through
    the block's own projections out (diffusers' AttnProcessor2_0 and the DiT's AttnProcessor alike)."""
    batch, head_dim = query.shape[0], key.shape[-1] // attn.heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    outs = []
    for state, q, k, v, mask in zip(rows.states, *(rows.split(t, 1) for t in (query, key, value)), masks, strict=True):
        keys, values = state.keys_values(name).extend(heads(k), heads(v))
        outs.append(F.scaled_dot_product_attention(heads(q), keys, values, attn_mask=mask, dropout_p=0.0))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](out))


def _transformer(rows: Rows, name: str, block, x: torch.Tensor, biases: list) -> torch.Tensor:
    """matcha's BasicTransformerBlock (layer norms, self-attention, feed-forward) over new frames."""
    attn, normed = block.attn1, block.norm1(x)
    query, key, value = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
    x = _attend(rows, name, attn, query, key, value, biases) + x
    return block.ff(block.norm3(x)) + x


def _transformers(rows: Rows, name: str, blocks, x: torch.Tensor, biases: list) -> torch.Tensor:
    x = x.transpose(1, 2).contiguous()
    for i, block in enumerate(blocks):
        x = _transformer(rows, f"{name}.{i}", block, x, biases)
    return x.transpose(1, 2).contiguous()


def unet_step(est, rows: Rows, x, mu, t, spks, cond) -> torch.Tensor:
    """``CausalConditionalDecoder.forward(..., streaming=True)`` for each row's new frames; ``spks`` per frame."""
    t = est.time_mlp(est.time_embeddings(t).to(t.dtype))
    x = pack([x, mu, spks, cond], "b * t")[0]
    biases = [None if bool(v.all()) else _mask_bias(v, x.dtype) for v in rows.masks(est.static_chunk_size, x.device)]
    skips = []
    for i, (resnet, blocks, downsample) in enumerate(est.down_blocks):
        x = _resnet(rows, f"down{i}", resnet, x, t)
        x = _transformers(rows, f"down{i}", blocks, x, biases)
        skips.append(x)
        x = causal_conv(rows, f"down{i}.sample", downsample, x)
    for i, (resnet, blocks) in enumerate(est.mid_blocks):
        x = _resnet(rows, f"mid{i}", resnet, x, t)
        x = _transformers(rows, f"mid{i}", blocks, x, biases)
    for i, (resnet, blocks, upsample) in enumerate(est.up_blocks):
        skip = skips.pop()
        x = pack([x[:, :, : skip.shape[-1]], skip], "b * t")[0]
        x = _resnet(rows, f"up{i}", resnet, x, t)
        x = _transformers(rows, f"up{i}", blocks, x, biases)
        x = causal_conv(rows, f"up{i}.sample", upsample, x)
    x = _causal_block(rows, "final", est.final_block, x)
    return est.final_proj(x)


def unet_is_chunkable(est) -> str | None:
    """Why this U-Net cannot run chunk by chunk (None when it can): every layer must be causal in time."""
    from cosyvoice.flow.decoder import CausalConv1d

    if not hasattr(est, "static_chunk_size") or est.static_chunk_size <= 0:
        return "its decoder has no streaming chunk size"
    samplers = [blocks[-1] for blocks in est.down_blocks] + [blocks[-1] for blocks in est.up_blocks]
    if not all(isinstance(sampler, CausalConv1d) for sampler in samplers):
        return "its decoder changes the frame rate inside (more than one channel level)"
    return None


# -- CosyVoice3: DiT ----------------------------------------------------------------------------------
def _dit_attention(rows: Rows, name: str, attn, x, rope, masks: list) -> torch.Tensor:
    from x_transformers.x_transformers import apply_rotary_pos_emb

    query, key, value = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    freqs, scale = rope
    query_scale, key_scale = (scale, scale**-1.0) if scale is not None else (1.0, 1.0)
    query = apply_rotary_pos_emb(query, freqs, query_scale)
    key = apply_rotary_pos_emb(key, freqs, key_scale)
    return _attend(rows, name, attn, query, key, value, masks)


def _position_convs(rows: Rows, embed, x: torch.Tensor) -> torch.Tensor:
    """CausalConvPositionEmbedding over new frames (batch, frames, dim)."""
    x = x.permute(0, 2, 1)
    x = embed.conv1[1](causal_conv(rows, "pos1", embed.conv1[0], x))
    x = embed.conv2[1](causal_conv(rows, "pos2", embed.conv2[0], x))
    return x.permute(0, 2, 1)


def dit_step(dit, rows: Rows, x, mu, t, spks, cond) -> torch.Tensor:
    """``DiT.forward(..., streaming=True)`` for each row's new frames; ``spks`` per frame."""
    x, mu, cond, spks = x.transpose(1, 2), mu.transpose(1, 2), cond.transpose(1, 2), spks.transpose(1, 2)
    if t.ndim == 0:
        t = t.repeat(x.shape[0])
    t = dit.time_embed(t)
    embed = dit.input_embed
    x = embed.proj(torch.cat([x, cond, mu, spks], dim=-1))
    x = _position_convs(rows, embed.conv_pos_embed, x) + x
    rope = dit.rotary_embed(rows.positions(x.device))  # no xpos scale (dit_is_chunkable): per position only
    masks = [None if bool(v.all()) else v for v in rows.masks(dit.static_chunk_size, x.device)]
    for i, block in enumerate(dit.transformer_blocks):
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.attn_norm(x, emb=t)
        x = x + gate_msa.unsqueeze(1) * _dit_attention(rows, f"dit{i}", block.attn, norm, rope, masks)
        ff_norm = block.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp.unsqueeze(1) * block.ff(ff_norm)
    x = dit.norm_out(x, t)
    return dit.proj_out(x).transpose(1, 2)


def dit_is_chunkable(dit) -> str | None:
    if getattr(dit, "static_chunk_size", 0) <= 0:
        return "its DiT has no streaming chunk size"
    if dit.long_skip_connection is not None:
        return "its DiT has a long skip connection"
    if getattr(dit.rotary_embed, "scale", None) is not None:
        return "its DiT's rotary embedding scales by position (xpos)"
    return None
