"""Checks of CosyVoice speaker entries (spk2info.pt values, per-user voice files) against a loaded model.

A file made for another model has other sizes, and one made on the other generation has the other
convention for its prompt text (CosyVoice3's carries ``<|endofprompt|>``; CosyVoice2's does not): both
are refused with a reason before upstream trips on them.
"""

from dataclasses import dataclass

import torch

PROMPT_MARK = "<|endofprompt|>"

# keys of a zero-shot voice in upstream's spk2info.pt (what add_zero_shot_spk stores)
ZERO_SHOT_KEYS = (
    "prompt_text",
    "prompt_text_len",
    "llm_prompt_speech_token",
    "llm_prompt_speech_token_len",
    "flow_prompt_speech_token",
    "flow_prompt_speech_token_len",
    "prompt_speech_feat",
    "prompt_speech_feat_len",
    "llm_embedding",
    "flow_embedding",
)


@dataclass(frozen=True)
class ModelSizes:
    generation: int
    embed_dim: int  # speaker embedding width
    mel_bins: int
    text_vocab: int
    speech_vocab: int
    mark_id: int  # the text token of <|endofprompt|>
    mel_per_token: int = 2  # the flow's token_mel_ratio


def voice_problem(profile: object, sizes: ModelSizes) -> str | None:
    """Why ``profile`` cannot be used by this model, or None when it can."""
    if not isinstance(profile, dict):
        return "not a speaker entry (a dict)"
    if "embedding" in profile:  # a built-in SFT speaker
        return _tensor_problem(profile, "embedding", 2, sizes.embed_dim)
    missing = [key for key in ZERO_SHOT_KEYS if key not in profile]
    if missing:
        return f"not a CosyVoice speaker entry (missing {', '.join(missing)})"
    for key, dims, size in (
        ("llm_embedding", 2, sizes.embed_dim),
        ("flow_embedding", 2, sizes.embed_dim),
        ("prompt_speech_feat", 3, sizes.mel_bins),
    ):
        problem = _tensor_problem(profile, key, dims, size)
        if problem:
            return problem
    for key, vocab in (
        ("prompt_text", sizes.text_vocab),
        ("llm_prompt_speech_token", sizes.speech_vocab),
        ("flow_prompt_speech_token", sizes.speech_vocab),
    ):
        problem = _token_problem(profile, key, vocab)
        if problem:
            return problem
    frames, tokens = profile["prompt_speech_feat"].shape[1], profile["flow_prompt_speech_token"].shape[1]
    if frames != sizes.mel_per_token * tokens:
        per_token = sizes.mel_per_token
        return f"prompt_speech_feat has {frames} frames for {tokens} prompt tokens (the model uses {per_token} a token)"
    made_on = 3 if bool((profile["prompt_text"] == sizes.mark_id).any()) else 2
    if made_on != sizes.generation:
        return (
            f"a voice made on CosyVoice{made_on}; this server runs CosyVoice{sizes.generation}, "
            "whose speech tokens differ: clone it again from its prompt audio"
        )
    return None


def _token_problem(profile: dict, key: str, vocab: int) -> str | None:
    """Token ids: (1, N) integers within the vocabulary, with ``{key}_len`` equal to N."""
    value, length = profile.get(key), profile.get(f"{key}_len")
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] != 1 or value.is_floating_point():
        return f"{key} must be a (1, N) integer tensor"
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= vocab):
        return f"{key} holds ids outside this model's vocabulary of {vocab} (made for another model?)"
    if not isinstance(length, torch.Tensor) or length.numel() != 1 or int(length.reshape(-1)[0]) != value.shape[1]:
        return f"{key}_len must be one number equal to the length of {key}"
    return None


def _tensor_problem(profile: dict, key: str, dims: int, last: int) -> str | None:
    value = profile.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != dims or value.dtype != torch.float32:
        return f"{key} must be a {dims}-D float32 tensor"
    if value.shape[0] != 1:
        return f"{key} must hold one row (one speaker), not {value.shape[0]}"
    if value.shape[-1] != last:
        return f"{key} has {value.shape[-1]} values per row; this model expects {last} (made for another model?)"
    return None
