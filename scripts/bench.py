"""Benchmark the service: engine first chunk vs HTTP first byte, real-time factor, MP3 encoder speed.

Runs the app under a real uvicorn on 127.0.0.1 in this process (settings from COSYVOICE_* env vars)
and prints figures; it asserts nothing. Usage: ``make bench`` or ``python scripts/bench.py --runs 5``.
"""

import argparse
import asyncio
import concurrent.futures
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.services.engines.base import Mode, SynthesisRequest  # noqa: E402
from app.services.mp3 import Mp3Encoder  # noqa: E402

TEXTS = {
    "short": "你好，欢迎使用语音合成服务。",
    "long": "今天天气很好，我们一起去公园散步。" * 6 + "Then we walked home together, talking about the day. " * 4,
}


def start_server(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def engine_run(engine, text: str, speaker: str) -> tuple[float, float, float]:
    """(first chunk s, total s, audio s) straight from the engine, no HTTP."""
    request = SynthesisRequest(Mode.SFT, text, speaker=speaker)
    started = time.perf_counter()
    first, samples = None, 0
    for chunk in engine.synthesize(request):
        first = first if first is not None else time.perf_counter() - started
        samples += chunk.size
    return first, time.perf_counter() - started, samples / engine.sample_rate


CLIENT = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=32))  # reused: no per-request setup


def http_run(url: str, text: str, speaker: str, path: str = "/tts") -> tuple[float, float, int]:
    """(first byte s, total s, bytes) of one streamed response."""
    started = time.perf_counter()
    first, size = None, 0
    with CLIENT.stream("POST", url + path, json={"tts_text": text, "spk_id": speaker}) as response:
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

    settings = Settings()
    app = create_app(settings)
    url, server, thread = start_server(app)
    speech = app.state.speech
    engine = speech.engine
    speaker = speech.voices.builtin_ids()[0]
    print(f"engine: {engine.name} ({app.state.engine_reason}); sample rate {engine.sample_rate} Hz; speaker {speaker}")
    print(f"runs: {args.runs}; max_concurrency: {settings.max_concurrency}\n")

    try:
        http_run(url, TEXTS["short"], speaker)  # warm up
        for label, text in TEXTS.items():
            engine_runs = [engine_run(engine, text, speaker) for _ in range(args.runs)]
            http_runs = [http_run(url, text, speaker) for _ in range(args.runs)]
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
            results = list(pool.map(lambda _: http_run(url, TEXTS["long"], speaker), range(n)))
            wall = time.perf_counter() - started
        audio = engine_run(engine, TEXTS["long"], speaker)[2]
        print(f"[{n} concurrent /tts streams of the long text]")
        print(f"  first byte             {ms([r[0] for r in results])}")
        print(f"  wall time {wall:.2f} s for {n * audio:.1f} s of audio: aggregate RTF {wall / (n * audio):.4f}\n")

        pcm = np.concatenate(
            [c for c in engine.synthesize(SynthesisRequest(Mode.SFT, TEXTS["long"] * 3, speaker=speaker))]
        )
        chunk = engine.sample_rate // 2
        for bitrate in (64, 128):
            encoder = Mp3Encoder(engine.sample_rate, bitrate)
            started = time.perf_counter()
            for start in range(0, pcm.size, chunk):
                encoder.encode(pcm[start : start + chunk])
            encoder.flush()
            elapsed = time.perf_counter() - started
            seconds = pcm.size / engine.sample_rate
            print(f"MP3 encoder ({bitrate} kbps, 0.5 s chunks, {seconds:.0f} s): {seconds / elapsed:.0f}x real time")
    finally:
        server.should_exit = True
        thread.join(10)
        asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
