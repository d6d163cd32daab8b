"""One step of upstream's flow-matching estimators over a chunk of new frames, with the state of earlier chunks.

The same arithmetic as ``CausalConditionalDecoder.forward`` (CosyVoice2's U-Net) and ``DiT.forward``
(CosyVoice3) with ``streaming=True``, using their own layers and weights, for frames ``start`` onwards:
attention reads the stored keys and values of every earlier frame, causal convolutions read the stored
tail of their input. Inputs are unpadded (one utterance per row), so upstream's masks are all ones and
multiplying by them is left out.
"""

import torch
import torch.nn.functional as F
from einops import pack, repeat

from app.engines.cosyvoice.caches import ChunkState, causal_conv, chunk_mask


def _mask_bias(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Upstream's ``mask_to_bias``: 0 where a frame is seen, -1e10 where it is not."""
    return (1.0 - visible.to(dtype)) * -1.0e10


# -- CosyVoice2: CausalConditionalDecoder (a U-Net of causal ResNet blocks and transformer blocks) ---------
def _causal_block(state: ChunkState, name: str, block, x: torch.Tensor) -> torch.Tensor:
    conv, *rest = block.block  # CausalConv1d, Transpose, LayerNorm, Transpose, Mish
    x = causal_conv(state, name, conv, x)
    for layer in rest:
        x = layer(x)
    return x


def _resnet(state: ChunkState, name: str, resnet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    h = _causal_block(state, f"{name}.1", resnet.block1, x)
    h = h + resnet.mlp(t).unsqueeze(-1)
    h = _causal_block(state, f"{name}.2", resnet.block2, h)
    return h + resnet.res_conv(x)


def _attend(store, attn, query, key, value, mask) -> torch.Tensor:
    """Multi-head attention of new frames against every frame kept in ``store`` and themselves, through the
    block's own projections out (diffusers' AttnProcessor2_0 and the DiT's AttnProcessor alike)."""
    batch, head_dim = query.shape[0], key.shape[-1] // attn.heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    keys, values = store.extend(heads(key), heads(value))
    out = F.scaled_dot_product_attention(heads(query), keys, values, attn_mask=mask, dropout_p=0.0)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](out))


def _transformer(state: ChunkState, name: str, block, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """matcha's BasicTransformerBlock (layer norms, self-attention, feed-forward) over new frames."""
    attn, normed = block.attn1, block.norm1(x)
    query, key, value = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
    x = _attend(state.keys_values(name), attn, query, key, value, bias) + x
    return block.ff(block.norm3(x)) + x


def _transformers(state: ChunkState, name: str, blocks, x: torch.Tensor, bias) -> torch.Tensor:
    x = x.transpose(1, 2).contiguous()
    for i, block in enumerate(blocks):
        x = _transformer(state, f"{name}.{i}", block, x, bias)
    return x.transpose(1, 2).contiguous()


def unet_step(est, state: ChunkState, x, mu, t, spks, cond, start: int) -> torch.Tensor:
    """``CausalConditionalDecoder.forward(..., streaming=True)`` for frames ``start`` onwards."""
    t = est.time_mlp(est.time_embeddings(t).to(t.dtype))
    x = pack([x, mu, repeat(spks, "b c -> b c t", t=x.shape[-1]), cond], "b * t")[0]
    visible = chunk_mask(start, x.shape[-1], est.static_chunk_size, x.device)
    bias = None if bool(visible.all()) else _mask_bias(visible, x.dtype)
    skips = []
    for i, (resnet, blocks, downsample) in enumerate(est.down_blocks):
        x = _resnet(state, f"down{i}", resnet, x, t)
        x = _transformers(state, f"down{i}", blocks, x, bias)
        skips.append(x)
        x = causal_conv(state, f"down{i}.sample", downsample, x)
    for i, (resnet, blocks) in enumerate(est.mid_blocks):
        x = _resnet(state, f"mid{i}", resnet, x, t)
        x = _transformers(state, f"mid{i}", blocks, x, bias)
    for i, (resnet, blocks, upsample) in enumerate(est.up_blocks):
        skip = skips.pop()
        x = pack([x[:, :, : skip.shape[-1]], skip], "b * t")[0]
        x = _resnet(state, f"up{i}", resnet, x, t)
        x = _transformers(state, f"up{i}", blocks, x, bias)
        x = causal_conv(state, f"up{i}.sample", upsample, x)
    x = _causal_block(state, "final", est.final_block, x)
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
def _dit_attention(state: ChunkState, name: str, attn, x, rope, visible) -> torch.Tensor:
    from x_transformers.x_transformers import apply_rotary_pos_emb

    query, key, value = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    freqs, scale = rope
    query_scale, key_scale = (scale, scale**-1.0) if scale is not None else (1.0, 1.0)
    query = apply_rotary_pos_emb(query, freqs, query_scale)
    key = apply_rotary_pos_emb(key, freqs, key_scale)
    return _attend(state.keys_values(name), attn, query, key, value, visible)


def _position_convs(state: ChunkState, embed, x: torch.Tensor) -> torch.Tensor:
    """CausalConvPositionEmbedding over new frames (batch, frames, dim)."""
    x = x.permute(0, 2, 1)
    x = embed.conv1[1](causal_conv(state, "pos1", embed.conv1[0], x))
    x = embed.conv2[1](causal_conv(state, "pos2", embed.conv2[0], x))
    return x.permute(0, 2, 1)


def dit_step(dit, state: ChunkState, x, mu, t, spks, cond, start: int) -> torch.Tensor:
    """``DiT.forward(..., streaming=True)`` for frames ``start`` onwards."""
    x, mu, cond = x.transpose(1, 2), mu.transpose(1, 2), cond.transpose(1, 2)
    frames = x.shape[1]
    if t.ndim == 0:
        t = t.repeat(x.shape[0])
    t = dit.time_embed(t)
    embed = dit.input_embed
    x = embed.proj(torch.cat([x, cond, mu, repeat(spks, "b c -> b t c", t=frames)], dim=-1))
    x = _position_convs(state, embed.conv_pos_embed, x) + x
    rope = dit.rotary_embed(torch.arange(start, start + frames, device=x.device))
    visible = chunk_mask(start, frames, dit.static_chunk_size, x.device)
    visible = None if bool(visible.all()) else visible
    for i, block in enumerate(dit.transformer_blocks):
        norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.attn_norm(x, emb=t)
        x = x + gate_msa.unsqueeze(1) * _dit_attention(state, f"dit{i}", block.attn, norm, rope, visible)
        ff_norm = block.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp.unsqueeze(1) * block.ff(ff_norm)
    x = dit.norm_out(x, t)
    return dit.proj_out(x).transpose(1, 2)


def dit_is_chunkable(dit) -> str | None:
    if getattr(dit, "static_chunk_size", 0) <= 0:
        return "its DiT has no streaming chunk size"
    if dit.long_skip_connection is not None:
        return "its DiT has a long skip connection"
    return None
