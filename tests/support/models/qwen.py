"""The ``CosyVoice-BlankEN`` folder upstream loads with ``from_pretrained``: a tokenizer and a random Qwen2.

The tokenizer is byte-level BPE without merges (any text tokenizes, one token per UTF-8 byte, no training
data needed), padded with unused entries so that the special tokens land on Qwen2's real ids: upstream's
tokenizers then add ``<|endofprompt|>`` at 151646, the id CosyVoice3's LLM hard-codes.
"""

import json
from pathlib import Path

from tests.support.models.configs import QWEN_VOCAB, Sizes

FIRST_SPECIAL_ID = 151643  # <|endoftext|> in Qwen2's vocabulary


def write_tokenizer(qwen_dir: Path) -> None:
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import bytes_to_unicode

    symbols = bytes_to_unicode()  # byte value -> the printable character byte-level BPE uses for it
    vocab = {symbols[b]: b for b in range(256)}
    vocab.update({f"<|unused_{i}|>": i for i in range(256, FIRST_SPECIAL_ID)})  # never produced from text
    vocab_file, merges_file = qwen_dir / "vocab.json", qwen_dir / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = Qwen2TokenizerFast(
        vocab_file=str(vocab_file),
        merges_file=str(merges_file),
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.save_pretrained(qwen_dir)


def write_qwen(qwen_dir: Path, sizes: Sizes, seed: int) -> None:
    """A random Qwen2ForCausalLM of the given size (hidden, layers, heads) with Qwen2's full vocabulary."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=QWEN_VOCAB,
        hidden_size=sizes.qwen_hidden,
        intermediate_size=sizes.qwen_ffn,
        num_hidden_layers=sizes.qwen_layers,
        num_attention_heads=sizes.qwen_heads,
        num_key_value_heads=sizes.qwen_kv_heads,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        use_sliding_window=False,
        sliding_window=None,  # else transformers warns that sdpa ignores it
        tie_word_embeddings=True,
        bos_token_id=FIRST_SPECIAL_ID,
        eos_token_id=FIRST_SPECIAL_ID,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(qwen_dir)
