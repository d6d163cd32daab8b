"""Random CosyVoice2 / CosyVoice3 model dirs for tests (tiny) and benchmarks (full size), built from code.

The real weights are gigabytes on a model hub that CI cannot reach. Upstream's inference code does not
care what the weights mean, only that the dir has the files it loads and that their shapes agree, so
these dirs drive the real ``CosyVoice2`` / ``CosyVoice3`` classes end to end (text frontend, Qwen2 LLM,
flow matching, HiFT vocoder, streaming). The speech is noise with the real shape, rate and timing.

    cosyvoice{2,3}.yaml             upstream's classes and inference settings, sizes from configs.py
    llm.pt flow.pt hift.pt          state dicts of the modules that yaml builds
    CosyVoice-BlankEN/              the tokenizer and random Qwen2 (qwen.py)
    campplus.onnx, speech_tokenizer_v{2,3}.onnx   stand-ins (stubs.py)
    spk2info.pt                     two built-in SFT speakers, 中文女 and 英文男

Everything derives from ``seed``. ``cached_model`` builds a dir once and keeps it outside the project
(``$COSYVOICE_MODEL_CACHE``, default ``~/.cache/cosyvoice-service/models``).
"""

from tests.support.models.build import build_model, cached_model, working_copy

__all__ = ["build_model", "cached_model", "working_copy"]
