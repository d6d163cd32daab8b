"""Model configurations (upstream's hyperpyyaml) for random CosyVoice2 / CosyVoice3 model dirs.

Same classes and inference-time settings as upstream's; the training-only sections (data pipeline, GAN
discriminators, optimiser) are left out because inference never reads them. ``FULL`` sizes are those of
CosyVoice2-0.5B and Fun-CosyVoice3-0.5B, as upstream's training configs give them
(``examples/libritts/cosyvoice{2,3}/conf/cosyvoice{2,3}.yaml`` at the pinned commit), so a random model
of that size does the same compute per token as the real weights. ``TINY`` sizes keep every code path
and every rate (25 tokens/s, 2 mels per token, 480 samples per mel at 24 kHz) and shrink the rest.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sizes:
    qwen_hidden: int
    qwen_layers: int
    qwen_heads: int
    qwen_kv_heads: int
    qwen_ffn: int
    # CosyVoice2 flow: conformer encoder + U-Net estimator (upstream hard-codes 512 channels in its encoder)
    flow_blocks: int
    flow_heads: int
    flow_ffn: int
    cfm_channels: int
    cfm_blocks: int
    cfm_mid_blocks: int
    cfm_heads: int
    cfm_head_dim: int
    # CosyVoice3 flow: pre-lookahead convolution + DiT estimator
    lookahead_channels: int
    dit_dim: int
    dit_depth: int
    dit_heads: int
    dit_head_dim: int
    # HiFT vocoder
    hift_channels: int
    f0_channels: int


QWEN_VOCAB = 151936  # Qwen2's embedding table; the tokenizer puts <|endofprompt|> at 151646, as upstream hard-codes

TINY = Sizes(
    qwen_hidden=64, qwen_layers=2, qwen_heads=4, qwen_kv_heads=2, qwen_ffn=128,
    flow_blocks=1, flow_heads=4, flow_ffn=256,
    cfm_channels=64, cfm_blocks=1, cfm_mid_blocks=2, cfm_heads=2, cfm_head_dim=32,
    lookahead_channels=64, dit_dim=64, dit_depth=2, dit_heads=2, dit_head_dim=32,
    hift_channels=16, f0_channels=16,
)  # fmt: skip

FULL = Sizes(
    qwen_hidden=896, qwen_layers=24, qwen_heads=14, qwen_kv_heads=2, qwen_ffn=4864,
    flow_blocks=6, flow_heads=8, flow_ffn=2048,
    cfm_channels=256, cfm_blocks=4, cfm_mid_blocks=12, cfm_heads=8, cfm_head_dim=64,
    lookahead_channels=1024, dit_dim=1024, dit_depth=22, dit_heads=16, dit_head_dim=64,
    hift_channels=512, f0_channels=512,
)  # fmt: skip

_COMMON = """\
# A random CosyVoice{generation} for tests and benchmarks, written by tests/support/models (sizes: {size_name}).
__set_seed1: !apply:random.seed [{seed}]
__set_seed2: !apply:numpy.random.seed [{seed}]
__set_seed3: !apply:torch.manual_seed [{seed}]

sample_rate: 24000
llm_input_size: {qwen_hidden}
llm_output_size: {qwen_hidden}
spk_embed_dim: 192
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2
# streaming: the flow's chunk in speech tokens, and every chunk to its left in view (upstream's configs)
chunk_size: 25
num_decoding_left_chunks: -1

llm: !new:cosyvoice.llm.llm.{llm_class}
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: 6561
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
"""

_CFM = """\
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
"""

_FLOW_FIELDS = """\
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
"""

_FLOW2 = """\
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
{flow_fields}    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 512
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
        input_size: 512
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
{cfm}        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [{cfm_channels}]
            dropout: 0.0
            attention_head_dim: {cfm_head_dim}
            n_blocks: {cfm_blocks}
            num_mid_blocks: {cfm_mid_blocks}
            num_heads: {cfm_heads}
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>
"""

_FLOW3 = """\
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: 80
{flow_fields}    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: 80
        channels: {lookahead_channels}
        pre_lookahead_len: 3
{cfm}        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {dit_dim}
            depth: {dit_depth}
            heads: {dit_heads}
            dim_head: {dit_head_dim}
            ff_mult: 2
            mel_dim: 80
            mu_dim: 80
            spk_dim: 80
            out_channels: 80
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>
"""

_HIFT = """\
# upstream's CausalConditionalCFM.__init__ calls set_all_random_seed(0): reseed again
__set_seed_hift: !apply:torch.manual_seed [{hift_seed}]
hift: !new:cosyvoice.hifigan.generator.{hift_class}
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
{hift_extra}    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.{f0_class}
        num_class: 1
        in_channels: 80
        cond_channels: {f0_channels}

get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
{tokenizer_extra}allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: {fmax}
    center: False
"""

_GENERATIONS = {
    2: {
        "flow": _FLOW2,
        "llm_class": "Qwen2LM",
        "hift_class": "HiFTGenerator",
        "f0_class": "ConvRNNF0Predictor",
        "hift_extra": "",
        "tokenizer_extra": "",
        "fmax": 8000,
    },
    3: {
        "flow": _FLOW3,
        "llm_class": "CosyVoice3LM",
        "hift_class": "CausalHiFTGenerator",
        "f0_class": "CausalConvRNNF0Predictor",
        "hift_extra": "    conv_pre_look_right: 4\n",
        "tokenizer_extra": "    version: cosyvoice3\n",
        "fmax": "null",
    },
}


def render_yaml(generation: int, sizes: Sizes, seed: int, size_name: str) -> str:
    parts = _GENERATIONS[generation]
    values = {**asdict(sizes), **parts, "generation": generation, "seed": seed, "size_name": size_name}
    values.update(flow_seed=seed + 1, hift_seed=seed + 2, cfm=_CFM, flow_fields=_FLOW_FIELDS)
    template = _COMMON + parts["flow"] + _HIFT
    return template.format(**values)
