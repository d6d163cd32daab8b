"""Benchmark the CosyVoice engine at full size: the service beside upstream's own code, in one run.

Builds (once, cached outside the project) randomly initialised models with the real shapes of
CosyVoice2-0.5B and Fun-CosyVoice3-0.5B (tests/models: the same compute per token as the real weights;
they stop at a realistic length, about 6 speech tokens per Chinese character, see tests/models/stopping.py)
and measures, for each in a process of its own:

- parts: one LLM decode step (the engine's, without the text head, against upstream's
  ``forward_one_step``); the cost of token-to-wave chunk k against k for a cloned voice, 50-token chunks,
  the engine's chunked flow against upstream's ``token2wav`` (which runs the flow over everything so far);
- the service over HTTP (uvicorn in this process, default settings): first byte of a built-in and a cloned
  voice at concurrency 1 and 4; aggregate real-time factor at 1, 2 and 4, streaming (default) and not, and
  streaming with ``COSYVOICE_STREAM_TAIL=chunked``;
- upstream in this process, on the same loaded model: ``inference_*(stream=True)`` (the loop this service
  ran before), first chunk of the same two voices at 1 and 4; ``inference_sft(stream=False)`` at 1, 2, 4;
- upstream's runtime server (``runtime/python/fastapi/server.py``, started as its README says, in a process
  of its own) at 1, 2 and 4.

Usage: ``make bench-model`` or ``python scripts/bench_model.py --generations 2 3 [--skip server]``. Prints;
asserts nothing. On a GPU (CUDA available) the same phases run there; ``scripts/gpu_bench.sh`` is the
device machine's entry point.
"""

import argparse
import dataclasses
import os
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

LEVELS = (1, 2, 4)
PHASES = ("parts", "service", "upstream", "server")


def line(label: str, n: int, wall: float, firsts: list[float], audio: float) -> float:
    rtf = wall / audio
    print(f"  {label} x{n}: first {', '.join(f'{f:.1f}' for f in firsts)} s; wall {wall:.1f} s "
          f"for {audio:.1f} s of audio: aggregate RTF {rtf:.2f}", flush=True)  # fmt: skip
    return rtf


# -- parts ------------------------------------------------------------------------------------------
def parts_phase(engine, voice: dict, figures: dict) -> None:
    ours, theirs = llm_steps(engine)
    figures["llm"] = (ours, theirs)
    print(f"  LLM decode step: engine {ours:.0f} ms, upstream {theirs:.0f} ms ({theirs / ours - 1:+.0%})", flush=True)
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
def service_phase(url: str, app, figures: dict) -> None:
    engine, synth = app.state.speech.engine, app.state.speech.synthesizer

    def audio_of_last(n: int) -> float:
        return sum(r.samples for r in list(synth.recent)[-n:]) / engine.sample_rate

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
                figures[("server rtf", n)] = line(
                    "upstream runtime server /inference_sft",
                    n,
                    wall,
                    [r[0] for r in results],
                    sum(r[1] for r in results),
                )
        finally:
            server.terminate()
            server.wait(30)


def peak_rss() -> str:
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return f"{kb / 2**20:.1f} GiB"


def measure(generation: int, source: Path | None, skip: set[str], size: str) -> None:
    from app.engines.cosyvoice import import_upstream
    from tests.audio_utils import wav
    from tests.conftest import EN_PROMPT, spoken
    from tests.models import cached_model, working_copy
    from tests.server import live_server

    import_upstream(source)
    started = time.perf_counter()
    cached = cached_model(generation, size)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"== CosyVoice{generation}, {size} size ({cached}, ready in {time.perf_counter() - started:.0f} s), {device}")
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = working_copy(cached, Path(tmp) / "model")
        if "server" not in skip and source is not None:  # first: its own copy of the model, nothing else loaded
            server_phase(model_dir, source, generation, figures)
        settings = Settings(
            engine="cosyvoice", model_dir=model_dir, data_dir=Path(tmp) / "data", src=source,
            queue_timeout_seconds=3600, stall_timeout_seconds=3600, fp16=os.environ.get("COSYVOICE_FP16") == "true",
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
            if "parts" not in skip:
                parts_phase(engine, voice, figures)
            if "service" not in skip:
                service_phase(url, app, figures)
            if "upstream" not in skip:
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
        ours, theirs = figures["llm"]
        print(f"    LLM decode step: upstream / engine {theirs / ours:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, nargs="+", default=[2, 3], choices=(2, 3))
    parser.add_argument("--skip", nargs="*", default=[], choices=PHASES)
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: a quick check of the script")
    parser.add_argument("--one", type=int, choices=(2, 3), help=argparse.SUPPRESS)  # the per-model child
    args = parser.parse_args()
    source = Settings().src
    if args.one:
        measure(args.one, source, set(args.skip), args.size)
        return
    for generation in args.generations:
        if generation == 3 and source is None:
            print("== CosyVoice3 needs upstream's code: set COSYVOICE_SRC (make install-cosyvoice fetches it)")
            continue
        child = [sys.executable, __file__, "--one", str(generation), "--size", args.size, "--skip", *args.skip]
        subprocess.run(child, check=False)


if __name__ == "__main__":
    main()
