"""The CosyVoice engine against upstream's own code on a GPU, at full size, fp32 and fp16: one table.

Runs on a bare CUDA machine (``scripts/gpu_bench.sh`` installs what it needs from ``.gpu/``, which
``scripts/gpu_bundle.sh`` prepares): builds the random full-size CosyVoice2 and CosyVoice3 models, loads
each once, and for fp32 then fp16 (upstream's COSYVOICE_FP16: autocast for the LLM and the flow) measures

- one LLM decode step: upstream's for one request, the engine's batched step for 1, 4, 16 and 32 requests,
  and one prompt piece (what a joining request costs the others);
- token-to-wave chunk k for a cloned voice, 50-token chunks: the engine's chunked flow and upstream's
  ``token2wav`` (first, middle and last chunk);
- first audio (median) and aggregate real-time factor of 1, 4, 16 and 32 requests at once: the engine
  streaming with its batching scheduler (a built-in voice; a cloned one at 1), the engine's per-request loop
  (batching off), upstream's ``inference_sft(stream=True)`` and ``(stream=False)``.

Each row is appended to the output file as soon as it is measured (a run cut short keeps what it has).
Usage: ``python scripts/gpu_bench.py --out table.md [--size tiny]`` (tiny: a quick check on any machine).
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_bench  # noqa: E402
import torch  # noqa: E402
from engine_bench import (  # noqa: E402
    SPEAKER,
    at_once,
    chunk_costs,
    engine_run,
    llm_steps,
    synthetic_prompt,
    tail_difference,
    upstream_run,
)

from app.engines.cosyvoice.batching import PREFILL_PIECE  # noqa: E402

SHORT_TEXT = "今天天气很好，我们去散步。"  # 12 characters: the device's minutes are few


class Table:
    def __init__(self, path: Path):
        self.path = path
        path.write_text("")

    def add(self, text: str) -> None:
        print(text, flush=True)
        with self.path.open("a") as out:
            out.write(text + "\n")


def set_fp16(engine, on: bool) -> None:
    """Upstream's fp16 is autocast around its LLM and flow (the weights stay fp32): the same switch for both."""
    engine._model.model.fp16 = on
    engine.pipeline.fp16 = on
    engine.pipeline.lm.fp16 = on


def load(generation: int, size: str, table: Table, source: Path, batch: int):
    from app.engines.cosyvoice import BatchOptions, CosyVoiceEngine
    from tests.support.models import cached_model

    started = time.perf_counter()
    model_dir = cached_model(generation, size)
    built = time.perf_counter() - started
    engine = CosyVoiceEngine(model_dir, source=source, text_frontend=False, batch=BatchOptions(max_batch=batch))
    loaded = time.perf_counter() - started - built
    cloned = engine.make_voice("The quick brown fox jumps over the lazy dog.", synthetic_prompt())
    engine._model.frontend.spk2info["bench"] = dict(cloned)
    table.add(f"CosyVoice{generation} ({size}): model built in {built:.0f} s, loaded in {loaded:.0f} s")
    return engine, cloned


def measure(engine, cloned: dict, fp16: bool, levels: list[int], table: Table) -> None:
    set_fp16(engine, fp16)
    builtin = engine._model.frontend.spk2info[SPEAKER]
    name = f"CosyVoice{engine.generation} {'fp16 (autocast)' if fp16 else 'fp32'}"
    engine_run(engine, builtin, True, 0)  # warm-up: CUDA kernels, cuBLAS handles
    upstream_run(engine, SPEAKER, False)
    steps = llm_steps(engine, batches=tuple(levels))
    batched = ", ".join(f"{n} rows {steps[n]:.1f} ms" for n in levels)
    table.add(f"\n### {name}\n\nLLM decode step: upstream (1 request) {steps['upstream']:.1f} ms; engine, batched: "
              f"{batched}; one {PREFILL_PIECE}-position prompt piece {steps['piece']:.1f} ms")  # fmt: skip
    rows = chunk_costs(engine, cloned, tokens=300)
    cells = "; ".join(f"{k}: {a * 1000:.0f} / {c * 1000:.0f}" for k, (a, _, c) in enumerate(rows))
    table.add(f"\ntoken-to-wave ms per 50-token chunk k, engine / upstream token2wav: {cells}")
    tail = tail_difference(engine, cloned)
    table.add(f"\nlast chunk, chunked against upstream's: mel RMS difference {tail['mel_rms_ratio']:.1%} of its "
              f"deviation, audio RMS difference {tail['audio_rms_ratio']:.1%}")  # fmt: skip
    table.add("\n| path | requests at once | first audio, median (max) | aggregate RTF |")
    table.add("| --- | --- | --- | --- |")
    high = levels[-1:]
    batching = engine.pipeline.batch

    def per_request(i: int):
        return engine_run(engine, builtin, True, i)

    runs = [
        ("engine, streaming, batched, built-in voice", levels, lambda i: engine_run(engine, builtin, True, i)),
        ("engine, per-request loop (batching off)", levels, per_request),
        ("engine, streaming, cloned voice", levels[:1], lambda i: engine_run(engine, cloned, True, i)),
        ("upstream inference_sft(stream=True)", levels[:1] + high, lambda i: upstream_run(engine, SPEAKER, True)),
        ("upstream inference_zero_shot(stream=True)", levels[:1], lambda i: upstream_run(engine, "bench", True)),
        ("upstream inference_sft(stream=False)", levels[:1] + high, lambda i: upstream_run(engine, SPEAKER, False)),
    ]  # fmt: skip
    for label, counts, job in runs:
        engine.pipeline.set_batch(dataclasses.replace(batching, batching=job is not per_request))
        for n in counts:
            engine._model.model.token_hop_len = 25  # upstream grows it on the model and never resets it
            figures = at_once(n, job)
            table.add(
                f"| {label} | {n} | {figures['first']:.2f} s ({figures['first_max']:.2f} s) | {figures['rtf']:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--generations", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--text", default=SHORT_TEXT)
    args = parser.parse_args()
    engine_bench.TEXT = args.text
    from app.engines.cosyvoice import import_upstream

    source = Path(os.environ["COSYVOICE_SRC"])
    import_upstream(source)
    table = Table(args.out)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    table.add(f"## {time.strftime('%Y-%m-%d')}, {device}, torch {torch.__version__}, text: {engine_bench.TEXT}")
    loaded = [load(generation, args.size, table, source, max(args.levels)) for generation in args.generations]
    for fp16 in (False, True):  # both generations in fp32 first: a run cut short keeps the most useful rows
        for engine, cloned in loaded:
            measure(engine, cloned, fp16, args.levels, table)


if __name__ == "__main__":
    main()
