"""Build a tiny, randomly initialised CosyVoice2 model directory for tests.

The real CosyVoice2-0.5B weights are gigabytes and come from a model hub that
CI cannot reach.  The upstream inference code (``cosyvoice`` / ``matcha`` from
FunAudioLLM/CosyVoice) does not care what the weights *mean*, only that the
directory has the files it loads and that their shapes agree.  So this module
writes such a directory from nothing, in a few seconds, and the tests then
drive the real ``cosyvoice.cli.cosyvoice.CosyVoice2`` class over it: text
frontend, Qwen2 LLM decoding, flow matching, HiFT vocoder, streaming and not.
The speech it produces is noise, but it has the real shape, rate and timing.

What is written (``model_dir`` is what ``CosyVoice2(model_dir)`` is given)::

    cosyvoice2.yaml            hyperpyyaml describing llm / flow / hift, same
                               structure and classes as upstream's, tiny sizes
    llm.pt flow.pt hift.pt     state dicts of the modules that yaml builds
    CosyVoice-BlankEN/         a Qwen2 tokenizer and a tiny Qwen2 causal LM:
                               upstream's yaml points ``qwen_pretrain_path``
                               here and loads both with ``from_pretrained``
    campplus.onnx              stand-in speaker encoder (fbank -> 192-d)
    speech_tokenizer_v2.onnx   stand-in 25 Hz speech tokenizer (log-mel -> ids)
    spk2info.pt                two built-in SFT speakers, 中文女 and 英文男

Only the training-only parts of upstream's yaml (data pipeline, GAN
discriminators, optimiser settings) are left out: inference never reads them,
and building the discriminators would cost time and extra imports.

Why each size is what it is
---------------------------
* Tokenizer: byte-level BPE with the 256 byte symbols and no merges, saved as a
  ``Qwen2TokenizerFast``.  Any text tokenizes (one token per UTF-8 byte) and it
  needs no training data.  Upstream's ``QwenTokenizer`` adds ~20 special tokens
  (``<|endofprompt|>`` ...) at load time, so the LLM vocabulary leaves room.
* LLM: a Qwen2 of hidden size 64, 2 layers, 4 heads (2 KV heads) -- the
  smallest that still exercises grouped-query attention and the KV cache.
  The speech vocabulary stays 6561 (+3 stop/fill ids): it is fixed by the
  speech tokenizer's code book and shared with the flow's token embedding.
* EOS: upstream decodes at least 2 and at most 20 speech tokens per text
  token.  A random LLM would almost never pick EOS, so every sentence would run
  to the maximum; the EOS row of the output layer is zeroed and given a
  constant logit (``EOS_LOGIT``) so that, once the minimum is reached, each
  step ends with probability ~0.1 (about 9 extra tokens on average).  With 25
  speech tokens a second and one text token per UTF-8 byte, that is at least
  80 ms of audio per byte of text plus ~0.4 s: "你好，世界。" (18 bytes) gives
  ~1.5-2.5 s; keep test sentences under ~90 bytes to stay below 8 s.
* Flow encoder: width 512, because upstream hard-codes 512 channels in its
  ``PreLookaheadLayer`` and ``Upsample1D`` and always stacks 4 upsampled
  conformer blocks; what we can shrink is 1 block before upsampling (upstream
  6), 4 heads and a 256-wide feed-forward (upstream 2048).  This is most of the
  ~60 MB on disk.
* Flow decoder (the CFM estimator): 64 channels, 1 down/up block, 1 mid block,
  2 heads of 32 (upstream 256 channels, 4 + 12 blocks, 8 heads of 64).  The
  64 channels keep GroupNorm's 8 groups valid.  The chunk sizes that streaming
  depends on (25 tokens/s, 2 mels per token, static chunk 50, 2 left chunks,
  3 lookahead tokens) are kept exactly.
* HiFT vocoder: 16 base channels (upstream 512) and a 16-channel F0
  predictor; upsampling rates and iSTFT sizes are kept so one 50 Hz mel frame
  is still 480 samples at 24 kHz.
* ONNX stand-ins, written with ``onnx.helper`` so nothing is downloaded:
  ``campplus.onnx`` takes the (1, T, 80) fbank the frontend feeds it, takes
  the per-bin standard deviation over time (the frontend subtracts the mean,
  so a plain mean would be zero) and projects it to 192 dims;
  ``speech_tokenizer_v2.onnx`` takes the (1, 128, T) whisper log-mel and its
  length, keeps every 4th frame (100 Hz -> 25 Hz) and maps a random
  projection of each to an id in [0, 6561).

Everything is derived from ``seed``: the same seed gives byte-identical
files with the same library versions.  The build takes ~2 s once torch,
transformers and cosyvoice are imported, and writes ~67 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path

# Sizes (see the module docstring for why).
SPEECH_TOKEN_SIZE = 6561  # speech tokenizer code book; fixed by upstream's frontend and flow
SPK_EMBED_DIM = 192  # CAM++ embedding width; upstream's tts() defaults assume it
FLOW_WIDTH = 512  # hard-coded inside upstream's UpsampleConformerEncoder
QWEN_HIDDEN = 64
QWEN_LAYERS = 2
QWEN_HEADS = 4
QWEN_KV_HEADS = 2
QWEN_FFN = 128
QWEN_VOCAB = 320  # 256 bytes + <|endoftext|>, <|im_start|>, <|im_end|> + ~20 added by upstream, rounded up
FLOW_BLOCKS = 1
FLOW_HEADS = 4
FLOW_FFN = 256
CFM_CHANNELS = 64
CFM_HEADS = 2
CFM_HEAD_DIM = 32
HIFT_CHANNELS = 16
F0_CHANNELS = 16
# Constant logit of the LLM's EOS id.  The other logits of the random model
# are ~N(0, 0.6); of the 25 ids upstream's sampler keeps, the others sum to
# ~e^5, so e^EOS_LOGIT / (e^EOS_LOGIT + e^5) ~ 0.1 per step.
EOS_LOGIT = 2.8

SFT_SPEAKERS = ("中文女", "英文男")
ONNX_OPSET = 13
ONNX_IR_VERSION = 8  # old enough for any onnxruntime that supports opset 13

YAML_TEMPLATE = """\
# Tiny CosyVoice2 for tests: upstream's cosyvoice2.yaml with small sizes, written by tests/tiny_cosyvoice.py.
# Same classes and inference-time settings as upstream; the training-only sections are left out.
__set_seed1: !apply:random.seed [{seed}]
__set_seed2: !apply:numpy.random.seed [{seed}]
__set_seed3: !apply:torch.manual_seed [{seed}]

# fixed params
sample_rate: 24000
llm_input_size: {qwen_hidden}
llm_output_size: {qwen_hidden}
spk_embed_dim: {spk_embed_dim}
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2

# model params
llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {speech_token_size}
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1

# reseed so the flow's weights depend on the seed alone, not on what the LLM consumed
__set_seed_flow: !apply:torch.manual_seed [{flow_seed}]
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {flow_width}
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {speech_token_size}
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {flow_width}
        attention_heads: {flow_heads}
        linear_units: {flow_ffn}
        num_blocks: {flow_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {flow_width}
        use_cnn_module: False
        macaron_style: False
        use_dynamic_chunk: True
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{cfm_channels}]
            dropout: 0.0
            attention_head_dim: {cfm_head_dim}
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: {cfm_heads}
            act_fn: 'gelu'
            static_chunk_size: !ref <token_frame_rate> * <token_mel_ratio>
            num_decoding_left_chunks: 2

# upstream's CausalConditionalCFM.__init__ calls set_all_random_seed(0): reseed again
__set_seed_hift: !apply:torch.manual_seed [{hift_seed}]
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {hift_channels}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {f0_channels}

# frontend
get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: 8000
    center: False
"""


def render_yaml(seed: int) -> str:
    """The cosyvoice2.yaml text for ``seed``."""
    return YAML_TEMPLATE.format(
        seed=seed,
        flow_seed=seed + 1,
        hift_seed=seed + 2,
        qwen_hidden=QWEN_HIDDEN,
        spk_embed_dim=SPK_EMBED_DIM,
        speech_token_size=SPEECH_TOKEN_SIZE,
        flow_width=FLOW_WIDTH,
        flow_heads=FLOW_HEADS,
        flow_ffn=FLOW_FFN,
        flow_blocks=FLOW_BLOCKS,
        cfm_channels=CFM_CHANNELS,
        cfm_heads=CFM_HEADS,
        cfm_head_dim=CFM_HEAD_DIM,
        hift_channels=HIFT_CHANNELS,
        f0_channels=F0_CHANNELS,
    )


def _write_qwen(qwen_dir: Path, seed: int) -> None:
    """A byte-level Qwen2 tokenizer without merges and a tiny random Qwen2ForCausalLM."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import bytes_to_unicode

    qwen_dir.mkdir(parents=True, exist_ok=True)
    symbols = bytes_to_unicode()  # byte value -> the printable character byte-level BPE uses for it
    vocab_file, merges_file = qwen_dir / "vocab.json", qwen_dir / "merges.txt"
    vocab_file.write_text(json.dumps({symbols[b]: b for b in range(256)}, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = Qwen2TokenizerFast(
        vocab_file=str(vocab_file),
        merges_file=str(merges_file),
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.save_pretrained(qwen_dir)

    config = Qwen2Config(
        vocab_size=QWEN_VOCAB,
        hidden_size=QWEN_HIDDEN,
        intermediate_size=QWEN_FFN,
        num_hidden_layers=QWEN_LAYERS,
        num_attention_heads=QWEN_HEADS,
        num_key_value_heads=QWEN_KV_HEADS,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        use_sliding_window=False,
        sliding_window=None,  # else transformers warns that sdpa ignores it
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(qwen_dir)


def _save_onnx(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tiny_cosyvoice")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _write_campplus(path: Path, rng) -> None:
    """Speaker encoder stand-in: fbank (B, T, 80) -> per-bin std over T -> linear -> (B, 192)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = rng.standard_normal((80, SPK_EMBED_DIM)).astype(np.float32)
    bias = rng.standard_normal(SPK_EMBED_DIM).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["variance"], ["std"]),
        helper.make_node("MatMul", ["std", "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "frames", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", SPK_EMBED_DIM])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    _save_onnx(graph, path)


def _write_speech_tokenizer(path: Path, rng) -> None:
    """Speech tokenizer stand-in: log-mel (1, 128, T) at 100 Hz -> ids (1, ceil(T / 4)) at 25 Hz.

    ``feats_length`` is accepted, as upstream's frontend passes it, but unused.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([4], dtype=np.int64), "steps"),
        numpy_helper.from_array(1000.0 * rng.standard_normal((128, 1)).astype(np.float32), "projection"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array(SPEECH_TOKEN_SIZE, dtype=np.int64), "code_book_size"),
    ]
    nodes = [
        helper.make_node("Slice", ["feats", "starts", "ends", "axes", "steps"], ["frames_25hz"]),
        helper.make_node("Transpose", ["frames_25hz"], ["frames_last"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["frames_last", "projection"], ["projected"]),
        helper.make_node("Squeeze", ["projected", "last_axis"], ["scores"]),
        helper.make_node("Abs", ["scores"], ["magnitudes"]),
        helper.make_node("Cast", ["magnitudes"], ["ints"], to=TensorProto.INT64),
        helper.make_node("Mod", ["ints", "code_book_size"], ["tokens"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_speech_tokenizer_v2",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "frames"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "tokens"])],
        initializers,
    )
    _save_onnx(graph, path)


@contextlib.contextmanager
def _caller_rng_kept():
    """Seeding (ours, and the yaml's __set_seed lines) must not leak into the caller's RNGs."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def build_tiny_cosyvoice2(model_dir: Path, seed: int = 0) -> Path:
    """Write a complete tiny CosyVoice2 model directory into ``model_dir`` and return it.

    Needs ``cosyvoice`` (upstream), ``transformers``, ``hyperpyyaml``, ``onnx`` and
    ``torch``; downloads nothing.  Existing files of the same names are overwritten.
    """
    import numpy as np
    import torch
    from hyperpyyaml import load_hyperpyyaml

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    qwen_dir = model_dir / "CosyVoice-BlankEN"
    yaml_text = render_yaml(seed)
    (model_dir / "cosyvoice2.yaml").write_text(yaml_text, encoding="utf-8")
    with _caller_rng_kept():
        _write_qwen(qwen_dir, seed)
        # Build the modules exactly as upstream's CosyVoice2 will, so that the state dicts match.
        configs = load_hyperpyyaml(yaml_text, overrides={"qwen_pretrain_path": str(qwen_dir)})

    tokenizer = configs["get_tokenizer"]()  # upstream's QwenTokenizer, with the special tokens it adds
    assert len(tokenizer.tokenizer) <= QWEN_VOCAB, f"tokenizer has {len(tokenizer.tokenizer)} ids > {QWEN_VOCAB}"

    llm = configs["llm"]
    with torch.no_grad():
        eos = llm.speech_token_size
        llm.llm_decoder.weight[eos].zero_()
        llm.llm_decoder.bias[eos] = EOS_LOGIT
    torch.save(llm.state_dict(), model_dir / "llm.pt")
    torch.save(configs["flow"].state_dict(), model_dir / "flow.pt")
    torch.save(configs["hift"].state_dict(), model_dir / "hift.pt")

    rng = np.random.default_rng(seed)
    _write_campplus(model_dir / "campplus.onnx", rng)
    _write_speech_tokenizer(model_dir / "speech_tokenizer_v2.onnx", rng)

    # Built-in SFT speakers, in upstream's format: spk2info[name]['embedding'] is (1, 192).
    generator = torch.Generator().manual_seed(seed)
    spk2info = {name: {"embedding": torch.randn(1, SPK_EMBED_DIM, generator=generator)} for name in SFT_SPEAKERS}
    torch.save(spk2info, model_dir / "spk2info.pt")
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random CosyVoice2 model directory.")
    parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build_tiny_cosyvoice2(args.out_dir, seed=args.seed)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
