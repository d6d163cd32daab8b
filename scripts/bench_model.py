"""Benchmark the CosyVoice engine at full size: the service beside upstream's own path, in one run.

Builds (once, cached outside the project) randomly initialised models with the real shapes of
CosyVoice2-0.5B and Fun-CosyVoice3-0.5B (tests/models: the same compute per token as the real weights;
they stop at a realistic length, about 6 speech tokens per Chinese character, see tests/models/stopping.py)
and measures, for each in a process of its own:

- the service (uvicorn in this process, default settings): the engine's first chunk, HTTP first byte of
  /tts and of /generate_audio stream "True", RTF at concurrency 1, 2 and 4, for /tts's default path
  (engine streaming) and with stream=false (upstream's own path, through the service);
- upstream's own non-streaming path (``inference_sft(stream=False)``, what upstream's runtime server
  runs, one thread per request) on the same loaded model, at concurrency 1, 2 and 4;
- peak RSS of each phase. Ratios (service / upstream) come from the same run.

Usage: ``make bench-model`` or ``python scripts/bench_model.py --generations 2 3``. Prints; asserts nothing.
"""

import argparse
import concurrent.futures
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import CLIENT, http_run  # noqa: E402

from app.config import Settings  # noqa: E402
from app.engines.base import Mode, SynthesisRequest  # noqa: E402

TEXT = "今天天气很好，我们一起去公园散步吧。"  # 18 characters, ~4.5 s of speech
SPEAKER = "中文女"
LEVELS = (1, 2, 4)
SERVICE_PATHS = {"service /tts (default: engine streaming)": True, "service /tts stream=false": False}
UPSTREAM = "upstream inference_sft(stream=False)"


class PeakRss:
    """The process's largest resident set size while a phase runs (sampled every 50 ms)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            with open("/proc/self/status") as status:
                kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            self.peak = max(self.peak, kb * 1024)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    def __str__(self) -> str:
        return f"{self.peak / 2**30:.2f} GiB"


def concurrently(n: int, job) -> tuple[float, list]:
    """(wall seconds, results) of ``n`` copies of ``job`` started together."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda _: job(), range(n)))
    return time.perf_counter() - started, results


def upstream_run(model, text: str) -> tuple[float, float]:
    """(seconds until the whole utterance is there, audio seconds) of upstream's non-streaming SFT path."""
    started = time.perf_counter()
    samples = sum(out["tts_speech"].shape[1] for out in model.inference_sft(text, SPEAKER, stream=False))
    return time.perf_counter() - started, samples / model.sample_rate


def report_level(label: str, n: int, wall: float, firsts: list[float], audio: float) -> float:
    rtf = wall / audio
    print(f"  {label} x{n}: first bytes {', '.join(f'{f:.1f}' for f in firsts)} s; wall {wall:.1f} s "
          f"for {audio:.1f} s of audio: aggregate RTF {rtf:.2f}")  # fmt: skip
    return rtf


def measure(generation: int, source: Path | None) -> None:
    from app.engines.cosyvoice import import_upstream
    from tests.models import cached_model, working_copy
    from tests.server import live_server

    import_upstream(source)
    started = time.perf_counter()
    cached = cached_model(generation, "full")
    print(f"== CosyVoice{generation}, full size ({cached}, ready in {time.perf_counter() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = working_copy(cached, Path(tmp) / "model")
        settings = Settings(
            engine="cosyvoice", model_dir=model_dir, data_dir=Path(tmp) / "data", src=source,
            queue_timeout_seconds=3600, stall_timeout_seconds=3600,
        )  # fmt: skip
        with live_server(settings) as (url, app):
            run_phases(url, app)


def run_phases(url: str, app) -> None:
    from app.engines.espeak import EspeakEngine
    from tests.audio_utils import wav
    from tests.conftest import EN_PROMPT, spoken

    speech = app.state.speech
    engine, synth = speech.engine, speech.synthesizer
    print(f"   {engine.description}; text: {TEXT} ({len(TEXT)} characters)")
    prompt = wav(spoken(EspeakEngine(), EN_PROMPT), 24000)
    files = {"prompt_audio": ("prompt.wav", prompt, "audio/wav")}
    CLIENT.post(f"{url}/clone", data={"spk_id": "bench", "prompt_text": EN_PROMPT}, files=files).raise_for_status()

    rtf, first_byte = {}, {}
    with PeakRss() as service_rss:
        voice = speech.voices.library.get(SPEAKER)
        request = SynthesisRequest(Mode.SFT, TEXT, speaker=SPEAKER, voice=voice.profile, stream=True)
        started, first, samples = time.perf_counter(), None, 0
        for chunk in engine.synthesize(request):
            first = first if first is not None else time.perf_counter() - started
            samples += chunk.size
        audio = samples / engine.sample_rate
        print(f"  engine first chunk {first:.1f} s; {audio:.1f} s of audio "
              f"({audio * 25 / len(TEXT):.1f} speech tokens per character)")  # fmt: skip
        body = {"mode": "3s极速复刻", "tts_text": TEXT, "spk_id": "bench", "stream": "True"}
        first_generate, _, _ = http_run(url, body, "/generate_audio")
        print(f"  HTTP /generate_audio stream True (cloned voice): first byte {first_generate:.1f} s")
        for path, stream in SERVICE_PATHS.items():
            for n in LEVELS:
                body = {"tts_text": TEXT, "spk_id": SPEAKER, "stream": stream}
                wall, results = concurrently(n, lambda body=body: http_run(url, body))
                audio = sum(r.samples for r in list(synth.recent)[-n:]) / engine.sample_rate
                first_byte[(path, n)] = max(r[0] for r in results)
                rtf[(path, n)] = report_level(path, n, wall, [r[0] for r in results], audio)
    print(f"  service peak RSS {service_rss}")

    model = engine._model  # the same loaded upstream object
    # CosyVoice3's LLM needs the marker in the text (upstream's example.py form); the service adds the same
    text = TEXT if engine.generation == 2 else f"You are a helpful assistant.<|endofprompt|>{TEXT}"
    with PeakRss() as upstream_rss:
        for n in LEVELS:
            wall, results = concurrently(n, lambda: upstream_run(model, text))
            firsts = [r[0] for r in results]
            first_byte[("upstream", n)] = max(firsts)
            rtf[("upstream", n)] = report_level(UPSTREAM, n, wall, firsts, sum(r[1] for r in results))
    print(f"  upstream peak RSS {upstream_rss}")
    for path in SERVICE_PATHS:
        for name, figures in (("slowest first byte", first_byte), ("aggregate RTF", rtf)):
            ratios = ", ".join(f"x{n} {figures[(path, n)] / figures[('upstream', n)]:.2f}" for n in LEVELS)
            print(f"  {path} / upstream, {name}: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, nargs="+", default=[2, 3], choices=(2, 3))
    parser.add_argument("--one", type=int, choices=(2, 3), help=argparse.SUPPRESS)  # the per-model child
    args = parser.parse_args()
    source = Settings().src
    if args.one:
        measure(args.one, source)
        return
    for generation in args.generations:
        if generation == 3 and source is None:
            print("== CosyVoice3 needs upstream's code: set COSYVOICE_SRC (make install-cosyvoice fetches it)")
            continue
        subprocess.run([sys.executable, __file__, "--one", str(generation)], check=False)


if __name__ == "__main__":
    main()
