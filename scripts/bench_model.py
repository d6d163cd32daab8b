"""Benchmark the CosyVoice engine at full size: the service beside upstream's own code, in one run.

Builds (once, cached outside the project) randomly initialised models with the real shapes of
CosyVoice2-0.5B and Fun-CosyVoice3-0.5B (tests/support/models: the same compute per token as the real weights;
they stop at a realistic length, about 6 speech tokens per Chinese character, see tests/support/models/stopping.py)
and measures, for each in a process of its own:

- parts: one LLM decode step, upstream's ``forward_one_step`` against the engine's batched step for 1, 2, 4
  and 8 requests, and one prompt piece (what a joining request costs the others);
- concurrency: the service over HTTP (uvicorn in this process, ``COSYVOICE_MAX_CONCURRENCY=8``), ``/tts``
  streaming a built-in voice at 1, 2, 4 and 8 requests at once, batched (default: the LLM stepped together,
  flow and vocoder chunks gathered), batched with ``COSYVOICE_STREAM_TAIL=chunked``, and each request alone
  (the loop before batching: an LLM thread per request, each chunk alone): audio seconds per wall second,
  first byte p50 / p95;
- server: upstream's runtime server (``runtime/python/fastapi/server.py``, started as its README says, in a
  process of its own) at the same levels;
- and, asked for by name (issue 17's figures): chunks, the cost of token-to-wave chunk k against k for a
  cloned voice (the engine's chunked flow against upstream's ``token2wav``) and the chunked tail's
  difference; service, first byte of a built-in and a cloned voice at 1 and 4 and real-time factors
  streaming and not; upstream, upstream's ``inference_*`` in this process on the same loaded model.

Usage: ``make bench-model`` or ``python scripts/bench_model.py --generations 2 3 --phases parts server`` (and
``--configs batched`` for one configuration of the concurrency phase).
Prints; asserts nothing. On a GPU (CUDA available) the same phases run there; ``scripts/gpu_bench.sh`` is the
device machine's entry point.
"""

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import CLIENT, http_run  # noqa: E402
from engine_bench import (  # noqa: E402
    SPEAKER,
    TEXT,
    V3_SYSTEM,
    chunk_costs,
    concurrently,
    llm_steps,
    tail_difference,
    upstream_run,
)

from app.config import Settings  # noqa: E402

LEVELS = (1, 2, 4, 8)
# the service's configurations at each level: (label, batching, COSYVOICE_STREAM_TAIL); the batched ones last:
# eight streams' keys and values at once may not fit a 24 GB machine (CosyVoice2 was killed there once)
CONCURRENCY = (
    ("per-request loop", False, "full"),
    ("batched", True, "full"),
    ("batched, chunked tail", True, "chunked"),
)
PHASES = ("parts", "concurrency", "server", "chunks", "service", "upstream")
DEFAULT_PHASES = ("parts", "concurrency", "server")


def line(label: str, n: int, wall: float, firsts: list[float], audio: float) -> float:
    rtf = wall / audio
    print(f"  {label} x{n}: first {', '.join(f'{f:.1f}' for f in firsts)} s; wall {wall:.1f} s "
          f"for {audio:.1f} s of audio: aggregate RTF {rtf:.2f}", flush=True)  # fmt: skip
    return rtf


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))]  # nearest rank


# -- parts ------------------------------------------------------------------------------------------
def parts_phase(engine, figures: dict) -> None:
    steps = figures["llm"] = llm_steps(engine)
    batches = [key for key in steps if isinstance(key, int)]
    cells = ", ".join(f"{b}: {steps[b]:.0f} ms ({steps[b] / b:.0f} per request)" for b in batches)
    print(f"  LLM decode step: upstream {steps['upstream']:.0f} ms for one request; engine batched {cells}; "
          f"one prompt piece of 64 positions {steps['piece']:.0f} ms", flush=True)  # fmt: skip


def chunks_phase(engine, voice: dict) -> None:
    prompt = voice["flow_prompt_speech_token"].shape[1]
    print(f"  token-to-wave per chunk, cloned voice ({prompt} prompt tokens), 50-token chunks, 400 tokens:")
    print("    chunk  engine (chunked last)  engine (upstream's whole last)  upstream token2wav")
    rows = chunk_costs(engine, voice)
    for k, (chunked, whole, upstream) in enumerate(rows):
        print(f"    {k:5d}  {chunked:19.2f} s  {whole:29.2f} s  {upstream:16.2f} s")
    totals = [sum(column) for column in zip(*rows, strict=True)]
    print(f"    total  {totals[0]:19.2f} s  {totals[1]:29.2f} s  {totals[2]:16.2f} s", flush=True)
    tail = tail_difference(engine, voice)
    print(f"  the last chunk ({tail['tokens']} tokens), COSYVOICE_STREAM_TAIL=chunked against upstream's: mel max "
          f"|difference| {tail['mel_max']:.3f}, RMS difference {tail['mel_rms_ratio']:.1%} of the mel's deviation; "
          f"audio RMS difference {tail['audio_rms_ratio']:.1%} of the audio's RMS", flush=True)  # fmt: skip


# -- the service over HTTP --------------------------------------------------------------------------------
def recorded_audio(synth, n: int) -> int:
    """Samples of the last ``n`` streams, once every stream started is recorded (a stream is recorded just after
    its response's last byte, which the client may see first)."""
    stats, deadline = synth.stats, time.monotonic() + 30
    while stats.completed + stats.cancelled + stats.failed < stats.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return sum(r.samples for r in list(synth.recent)[-n:])


def concurrency_phase(url: str, app, figures: dict, configs: set[str]) -> None:
    """``/tts`` streaming at each level: batched (the LLM stepped together, flow and vocoder chunks gathered),
    batched with ``COSYVOICE_STREAM_TAIL=chunked``, and each request alone (the LLM in a thread per request,
    each chunk alone)."""
    engine, synth = app.state.speech.engine, app.state.speech.synthesizer
    pipeline, body, steps = engine.pipeline, {"tts_text": TEXT, "spk_id": SPEAKER}, []
    options = pipeline.options
    for label, batching, tail in [config for config in CONCURRENCY if config[0] in configs]:
        observe = lambda kind, size, seconds: steps.append((kind, size, seconds))  # noqa: E731
        pipeline.set_batch(dataclasses.replace(pipeline.batch, batching=batching, observe=observe))
        pipeline.options = dataclasses.replace(options, tail=tail)
        for n in LEVELS:
            steps.clear()
            wall, results = concurrently(n, lambda _: http_run(url, body))
            audio = recorded_audio(synth, n) / engine.sample_rate
            firsts = [r[0] for r in results]
            figures[("throughput", label, n)] = audio / wall
            figures[("first", label, n)] = (percentile(firsts, 50), percentile(firsts, 95))
            full = [seconds for kind, size, seconds in steps if kind == "decode" and size == n]
            p50, p95 = figures[("first", label, n)]
            step = f"; decode step for {n}: {statistics.median(full) * 1000:.0f} ms" if full and batching else ""
            for stage in ("flow", "vocoder"):
                sizes = [size for kind, size, _ in steps if kind == stage]
                step += f"; {stage} chunks per pass {statistics.mean(sizes):.1f}" if sizes else ""
            print(f"  service /tts {label} x{n}: {audio / wall:.3f} audio s per wall s ({audio:.1f} s in "
                  f"{wall:.1f} s); first byte p50 {p50:.1f} s, p95 {p95:.1f} s{step}", flush=True)  # fmt: skip
    pipeline.options = options


def service_phase(url: str, app, figures: dict) -> None:
    engine, synth = app.state.speech.engine, app.state.speech.synthesizer

    def audio_of_last(n: int) -> float:
        return recorded_audio(synth, n) / engine.sample_rate

    for voice, spk in (("built-in", SPEAKER), ("cloned", "bench")):
        for n in (1, 4):
            wall, results = concurrently(n, lambda _, spk=spk: http_run(url, {"tts_text": TEXT, "spk_id": spk}))
            firsts = sorted(r[0] for r in results)
            figures[("service first", voice, n)] = firsts[len(firsts) // 2]
            line(f"service /tts {voice}", n, wall, firsts, audio_of_last(n))
    options = engine.pipeline.options
    for label, stream, tail in (
        ("streaming", True, "full"),
        ("stream=false", False, "full"),
        ("streaming, tail chunked", True, "chunked"),
    ):
        engine.pipeline.options = dataclasses.replace(options, tail=tail)
        for n in LEVELS if tail == "full" else (1, 4):
            body = {"tts_text": TEXT, "spk_id": SPEAKER, "stream": stream}
            wall, results = concurrently(n, lambda _, body=body: http_run(url, body))
            figures[("service rtf", label, n)] = line(
                f"service /tts {label}", n, wall, [r[0] for r in results], audio_of_last(n)
            )
    engine.pipeline.options = options


# -- upstream in this process -------------------------------------------------------------------------
def upstream_phase(engine, voice: dict, figures: dict) -> None:
    engine._model.frontend.spk2info["bench"] = dict(voice)
    for voice_name, spk in (("built-in", SPEAKER), ("cloned", "bench")):
        for n in (1, 4):
            engine._model.model.token_hop_len = 25  # upstream grows it on the model object and never resets it
            wall, results = concurrently(n, lambda _, spk=spk: upstream_run(engine, spk, True))
            firsts = sorted(r[0] for r in results)
            figures[("upstream first", voice_name, n)] = firsts[len(firsts) // 2]
            line(f"upstream inference(stream=True) {voice_name}", n, wall, firsts, sum(r[1] for r in results))
    for n in LEVELS:
        wall, results = concurrently(n, lambda _: upstream_run(engine, SPEAKER, False))
        firsts, audio = [r[0] for r in results], sum(r[1] for r in results)
        figures[("upstream rtf", n)] = line("upstream inference_sft(stream=False)", n, wall, firsts, audio)


# -- upstream's runtime server ----------------------------------------------------------------------------
def server_phase(model_dir: Path, source: Path, generation: int, figures: dict) -> None:
    """upstream's runtime/python/fastapi/server.py, its checkout first on the path (server.py appends it
    last, where the installed wheel's cosyvoice would shadow it), wetext hidden (see shared/NOTES.md)."""
    server_dir = source / "runtime" / "python" / "fastapi"
    if not (server_dir / "server.py").is_file():
        print(f"  upstream's runtime server: not in {source}; skipped")
        return
    with tempfile.TemporaryDirectory() as hidden:
        (Path(hidden) / "wetext").mkdir()
        (Path(hidden) / "wetext" / "__init__.py").write_text("raise ImportError('hidden by the benchmark')\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([hidden, str(source)])}
        port = 50000 + os.getpid() % 10000
        command = [sys.executable, "server.py", "--port", str(port), "--model_dir", str(model_dir)]
        with open(Path(hidden) / "server.log", "w") as log:
            server = subprocess.Popen(command, cwd=server_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/inference_sft"
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    CLIENT.get(f"http://127.0.0.1:{port}/docs", timeout=2)
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(2)
            text = TEXT if generation == 2 else V3_SYSTEM + TEXT

            def call() -> tuple[float, float]:
                started, first, size = time.perf_counter(), None, 0
                with CLIENT.stream("POST", url, data={"tts_text": text, "spk_id": SPEAKER}) as response:
                    response.raise_for_status()
                    for chunk in response.iter_raw():
                        first = first if first is not None else time.perf_counter() - started
                        size += len(chunk)
                return first, size / 2 / 24000

            for n in LEVELS:
                wall, results = concurrently(n, lambda _: call())
                firsts, audio = [r[0] for r in results], sum(r[1] for r in results)
                figures[("server rtf", n)] = line("upstream runtime server /inference_sft", n, wall, firsts, audio)
                figures[("throughput", "server", n)] = audio / wall
                figures[("first", "server", n)] = (percentile(firsts, 50), percentile(firsts, 95))
        finally:
            server.terminate()
            server.wait(30)


def peak_rss() -> str:
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return f"{kb / 2**20:.1f} GiB"


def measure(generation: int, source: Path | None, phases: set[str], size: str, configs: set[str]) -> None:
    from app.engines.cosyvoice import import_upstream
    from tests.support.audio import wav
    from tests.support.models import cached_model, working_copy
    from tests.support.server import live_server
    from tests.support.speech import EN_PROMPT, spoken

    import_upstream(source)
    started = time.perf_counter()
    cached = cached_model(generation, size)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"== CosyVoice{generation}, {size} size ({cached}, ready in {time.perf_counter() - started:.0f} s), {device}")
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = working_copy(cached, Path(tmp) / "model")
        if "server" in phases and source is not None:  # first: its own copy of the model, nothing else loaded
            server_phase(model_dir, source, generation, figures)
        settings = Settings(
            engine="cosyvoice", model_dir=model_dir, data_dir=Path(tmp) / "data", src=source,
            queue_timeout_seconds=3600, stall_timeout_seconds=3600, fp16=os.environ.get("COSYVOICE_FP16") == "true",
            max_concurrency=max(LEVELS),
        )  # fmt: skip
        with live_server(settings) as (url, app):
            engine = app.state.speech.engine
            from app.engines.espeak import EspeakEngine

            files = {"prompt_audio": ("prompt.wav", wav(spoken(EspeakEngine(), EN_PROMPT), 24000), "audio/wav")}
            started = time.perf_counter()
            CLIENT.post(
                f"{url}/clone", data={"spk_id": "bench", "prompt_text": EN_PROMPT}, files=files
            ).raise_for_status()
            voice = app.state.speech.voices.library.get("bench").profile
            prompts = engine.pipeline.prompts
            print(f"   {engine.description}; text: {TEXT} ({len(TEXT)} characters)")
            kept = prompts.nbytes / 2**20
            print(f"  clone (5 s prompt; its flow prefix kept, {kept:.0f} MiB): {time.perf_counter() - started:.1f} s")
            if "parts" in phases:
                parts_phase(engine, figures)
            if "concurrency" in phases:
                concurrency_phase(url, app, figures, configs)
            if "chunks" in phases:
                chunks_phase(engine, voice)
            if "service" in phases:
                service_phase(url, app, figures)
            if "upstream" in phases:
                upstream_phase(engine, voice, figures)
        print(f"  peak RSS of this process (service and upstream in-process): {peak_rss()}")
    summary(figures)


def summary(figures: dict) -> None:
    def ratio(a, b) -> str:
        return f"{figures[a] / figures[b]:.2f}" if a in figures and b in figures else "-"

    print("  summary (ratios from this run):")
    for voice in ("built-in", "cloned"):
        for n in (1, 4):
            key = ("service first", voice, n)
            print(f"    first byte {voice} x{n}: service {figures.get(key, float('nan')):.1f} s, "
                  f"upstream's stream {figures.get(('upstream first', voice, n), float('nan')):.1f} s "
                  f"(ratio {ratio(key, ('upstream first', voice, n))})")  # fmt: skip
    for n in LEVELS:
        server = ("server rtf", n)
        print(f"    aggregate RTF x{n}: streaming / upstream server {ratio(('service rtf', 'streaming', n), server)}, "
              f"stream=false / upstream server {ratio(('service rtf', 'stream=false', n), server)}, "
              f"upstream in-process / server {ratio(('upstream rtf', n), server)}")  # fmt: skip
    for n in (1, 4):
        print(f"    aggregate RTF x{n}: streaming with the chunked tail / upstream server "
              f"{ratio(('service rtf', 'streaming, tail chunked', n), ('server rtf', n))}")  # fmt: skip
    if "llm" in figures:
        steps = figures["llm"]
        print(f"    LLM decode step: upstream / engine {steps['upstream'] / steps[1]:.2f}; the engine's step for "
              f"8 / for 1: {steps.get(8, float('nan')) / steps[1]:.2f}")  # fmt: skip
    labels = [label for label, _, _ in CONCURRENCY] + ["server"]
    print(f"    requests at once | audio s per wall s: {' / '.join(labels)} (batched / server) | first byte p50 (p95)")
    for n in LEVELS:
        cells = [figures.get(("throughput", label, n)) for label in labels]
        firsts = [figures.get(("first", label, n)) for label in labels]
        speed = " / ".join("-" if c is None else f"{c:.3f}" for c in cells)
        times = " / ".join("-" if f is None else f"{f[0]:.1f} ({f[1]:.1f})" for f in firsts)
        print(f"    {n:16d} | {speed} ({ratio(('throughput', 'batched', n), ('throughput', 'server', n))}) | {times}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, nargs="+", default=[2, 3], choices=(2, 3))
    parser.add_argument("--phases", nargs="+", default=list(DEFAULT_PHASES), choices=PHASES)
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: a quick check of the script")
    labels = [label for label, _, _ in CONCURRENCY]
    parser.add_argument("--configs", nargs="+", default=labels, choices=labels, help="the concurrency phase's")
    parser.add_argument("--one", type=int, choices=(2, 3), help=argparse.SUPPRESS)  # the per-model child
    args = parser.parse_args()
    source = Settings().src
    if args.one:
        measure(args.one, source, set(args.phases), args.size, set(args.configs))
        return
    for generation in args.generations:
        if generation == 3 and source is None:
            print("== CosyVoice3 needs upstream's code: set COSYVOICE_SRC (make install-cosyvoice fetches it)")
            continue
        child = [sys.executable, __file__, "--one", str(generation), "--size", args.size, "--phases", *args.phases]
        child += ["--configs", *args.configs]
        subprocess.run(child, check=False)


if __name__ == "__main__":
    main()
