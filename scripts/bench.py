"""Benchmark the service: engine first chunk vs HTTP first byte, real-time factor, each format's encoder.

Runs the app under a real uvicorn on 127.0.0.1 in this process (settings from COSYVOICE_* env vars)
and prints figures; it asserts nothing. Usage: ``make bench`` / ``make bench ENGINE=cosyvoice`` or
``python scripts/bench.py --runs 5``. With the CosyVoice engine and no model in COSYVOICE_MODEL_DIR,
it builds the tests' tiny random CosyVoice2 (data/tiny-cosyvoice2) and measures that.
"""

import argparse
import concurrent.futures
import logging
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings  # noqa: E402
from app.core.engine import Mode, SynthesisRequest  # noqa: E402
from app.core.formats import FORMATS, AudioOutput  # noqa: E402
from app.engines.model_dir import cosyvoice_generation  # noqa: E402
from tests.support.server import live_server  # noqa: E402

TEXTS = {
    "espeak": {
        "short": "你好，欢迎使用语音合成服务。",
        "long": "今天天气很好，我们一起去公园散步。" * 6 + "Then we walked home together, talking about the day. " * 4,
    },
    # the tiny random model speaks ~80 ms per UTF-8 byte: keep its texts short
    "cosyvoice": {"short": "你好，世界。", "long": "你好，欢迎使用语音合成服务。今天天气很好。"},
}


def tiny_model_if_needed(settings: Settings) -> Settings:
    if settings.engine != "cosyvoice" or cosyvoice_generation(settings.model_dir) is not None:
        return settings
    from app.engines.cosyvoice import import_upstream
    from tests.support.models import cached_model, working_copy

    import_upstream(settings.src)
    model_dir = working_copy(cached_model(2, "tiny"), settings.data_dir / "bench-model")
    print(f"no model in {settings.model_dir}: measuring the tiny random CosyVoice2 in {model_dir}")
    return settings.model_copy(update={"model_dir": model_dir})


def engine_run(engine, voice, text: str) -> tuple[float, float, float]:
    """(first chunk s, total s, audio s) straight from the engine, no HTTP."""
    request = SynthesisRequest(Mode.SFT, text, speaker=voice.spk_id, voice=voice.profile, stream=True)
    started = time.perf_counter()
    first, samples = None, 0
    for chunk in engine.synthesize(request):
        first = first if first is not None else time.perf_counter() - started
        samples += chunk.size
    return first, time.perf_counter() - started, samples / engine.sample_rate


CLIENT = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=32))  # reused: no per-request setup


def http_run(url: str, body: dict, path: str = "/tts") -> tuple[float, float, int]:
    """(first byte s, total s, bytes) of one streamed response."""
    started = time.perf_counter()
    first, size = None, 0
    with CLIENT.stream("POST", url + path, json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            first = first if first is not None else time.perf_counter() - started
            size += len(chunk)
    return first, time.perf_counter() - started, size


def ms(values) -> str:
    low, high = min(values) * 1000, max(values) * 1000
    return f"median {statistics.median(values) * 1000:7.1f} ms  (min {low:.1f}, max {high:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    settings = tiny_model_if_needed(Settings())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the figures
    with live_server(settings) as (url, app):
        report(app, url, settings, args)


def report(app, url: str, settings: Settings, args) -> None:
    speech = app.state.speech
    engine = speech.engine
    speaker = speech.voices.builtin_ids()[0]
    voice = speech.voices.library.get(speaker)
    texts = TEXTS[engine.name]
    print(f"engine: {engine.name} ({app.state.engine_reason}); sample rate {engine.sample_rate} Hz; speaker {speaker}")
    print(f"runs: {args.runs}; max_concurrency: {settings.max_concurrency}\n")

    http_run(url, {"tts_text": texts["short"], "spk_id": speaker})  # warm up
    for label, text in texts.items():
        engine_runs = [engine_run(engine, voice, text) for _ in range(args.runs)]
        http_runs = [http_run(url, {"tts_text": text, "spk_id": speaker}) for _ in range(args.runs)]
        audio = engine_runs[0][2]
        engine_first = [r[0] for r in engine_runs]
        http_first = [r[0] for r in http_runs]
        print(f"[{label} text: {len(text)} chars, {audio:.1f} s of audio]")
        print(f"  engine first chunk     {ms(engine_first)}")
        print(f"  HTTP /tts first byte   {ms(http_first)}")
        overhead = statistics.median(http_first) - statistics.median(engine_first)
        print(f"  service overhead       {overhead * 1000:7.1f} ms (median first byte - median first chunk)")
        print(f"  engine RTF             {statistics.median(r[1] for r in engine_runs) / audio:.4f}")
        print(f"  HTTP /tts RTF          {statistics.median(r[1] for r in http_runs) / audio:.4f}\n")

    n = args.concurrency
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda _: http_run(url, {"tts_text": texts["long"], "spk_id": speaker}), range(n)))
        wall = time.perf_counter() - started
    records = list(speech.synthesizer.recent)[-n:]
    audio = sum(r.samples for r in records) / n / engine.sample_rate
    print(f"[{n} concurrent /tts streams of the long text, max_concurrency {settings.max_concurrency}]")
    print(f"  engine first chunk     {ms([r.first_chunk_seconds for r in records])}")
    print(f"  HTTP first byte        {ms([r[0] for r in results])}  (includes waiting for a free slot)")
    print(f"  wall time {wall:.2f} s for {n * audio:.1f} s of audio: aggregate RTF {wall / (n * audio):.4f}\n")

    request = SynthesisRequest(Mode.SFT, texts["long"] * 3, voice.spk_id, voice.profile)
    formats(url, engine, speaker, np.concatenate(list(engine.synthesize(request))), texts["short"], args.runs)


def formats(url: str, engine, speaker: str, pcm: np.ndarray, text: str, runs: int) -> None:
    """Each format's encoder speed, and its first byte over POST /v1/audio/speech against raw PCM's."""
    seconds, chunk = pcm.size / engine.sample_rate, engine.sample_rate // 2
    print(f"[formats: encoding {seconds:.0f} s of speech in 0.5 s chunks; first byte of /v1/audio/speech, 24 kHz]")
    first_bytes = {}
    for name in ["pcm", *(n for n in FORMATS if n != "pcm")]:  # pcm first: the others are compared with it
        encoder = AudioOutput(FORMATS[name], 24000).encoder(engine.sample_rate)
        started = time.perf_counter()
        for start in range(0, pcm.size, chunk):
            encoder.encode(pcm[start : start + chunk])
        encoder.flush()
        speed = seconds / (time.perf_counter() - started)
        body = {"model": "tts-1", "voice": speaker, "input": text, "response_format": name}
        first_bytes[name] = [http_run(url, body, "/v1/audio/speech")[0] for _ in range(runs)]
        overhead = statistics.median(first_bytes[name]) - statistics.median(first_bytes["pcm"])
        versus_pcm = f"{overhead * 1000:+6.1f} ms vs pcm" if name != "pcm" else ""
        print(f"  {name:5}  encode {speed:6.0f}x real time   first byte {ms(first_bytes[name])}  {versus_pcm}")


if __name__ == "__main__":
    main()
