"""How a randomly initialised CosyVoice LLM is made to stop at a sensible length.

Upstream decodes at least 2 and at most 20 speech tokens per text token; a random LLM almost never
picks a stop id, so every sentence would run to the maximum. Both tricks leave the compute per token
exactly as it was (the same matrices are multiplied); they only set some weights.

CosyVoice2 (``Qwen2LM``, whose output layer has a bias): the stop id's row is zeroed and its bias set
to ``STOP_LOGIT``. The other logits of a random model are ~N(0, 0.58) at any size (the layer's default
initialisation scales with its width); of the 25 ids upstream's sampler keeps, the others sum to ~e^5, so
once the minimum is reached each step stops with probability ~0.1 (about 9 extra tokens).

CosyVoice3 (``CosyVoice3LM``: no bias, and every id from 6561 on ends decoding): the last Qwen2 layer
writes a constant into one hidden channel that nothing else touches (a value channel with zero weights
and a bias, routed there by the output projection; attention weights sum to one, so it is exact). That
channel dominates the final RMS norm, so the speech logits become nearly flat and the stop id 6561 (the
one upstream masks until the minimum length) gets a fixed logit of ``STOP_LOGIT_V3``, the other stop ids
the opposite: once the minimum is reached, each step stops with probability e^1 / (e^1 + 24) ~ 0.1.
"""

import torch

STOP_LOGIT = 2.8
STOP_LOGIT_V3 = 1.0
_CHANNEL = 0  # the hidden channel that carries the constant
_CONSTANT_PER_ROOT_WIDTH = 100.0  # the constant, relative to sqrt(hidden): far above the other channels


@torch.no_grad()
def make_v2_stop(llm) -> None:
    stop = llm.speech_token_size
    llm.llm_decoder.weight[stop].zero_()
    llm.llm_decoder.bias[stop] = STOP_LOGIT


@torch.no_grad()
def make_v3_stop(llm) -> None:
    qwen = llm.llm.model.model  # Qwen2Model inside upstream's Qwen2Encoder
    hidden = qwen.config.hidden_size
    head_dim = hidden // qwen.config.num_attention_heads
    groups = qwen.config.num_attention_heads // qwen.config.num_key_value_heads
    qwen.embed_tokens.weight[:, _CHANNEL] = 0
    llm.speech_embedding.weight[:, _CHANNEL] = 0
    for layer in qwen.layers:
        layer.self_attn.o_proj.weight[_CHANNEL, :] = 0
        layer.mlp.down_proj.weight[_CHANNEL, :] = 0
    attention = qwen.layers[-1].self_attn
    value = 0  # channel 0 of key/value head 0, repeated into the outputs of query heads 0..groups-1
    attention.v_proj.weight[value, :] = 0
    attention.v_proj.bias[value] = _CONSTANT_PER_ROOT_WIDTH * hidden**0.5
    for head in range(groups):
        attention.o_proj.weight[:, head * head_dim + value] = 0
    attention.o_proj.weight[_CHANNEL, value] = 1.0
    qwen.norm.weight[_CHANNEL] = 1.0
    # after the norm the channel is ~sqrt(hidden); the speech logits do not read it
    decoder = llm.llm_decoder.weight
    stop = llm.speech_token_size
    decoder[:, _CHANNEL] = 0
    decoder[stop:, :] = 0
    decoder[stop, _CHANNEL] = STOP_LOGIT_V3 / hidden**0.5
    decoder[stop + 1 :, _CHANNEL] = -STOP_LOGIT_V3 / hidden**0.5
