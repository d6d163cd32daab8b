"""Soak: a bounded mix of every door, disconnects, hostile bodies and clones at several times the concurrency limit.

Runs the service in a subprocess (`python -m app.server`, embedded engine, loopback) and prints what it saw; it
asserts nothing. Usage: ``make soak`` or ``python scripts/soak.py --seconds 600 --workers 16``.

``--keys-oss``: every request with an API key, users' voices in OSS (the test OSS server, which checks oss2's
signatures), and an OSS outage (every call answered 503) through the middle third of the run.
"""

import argparse
import collections
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.audio import tone, wav  # noqa: E402
from tests.support.oss_server import OssServer  # noqa: E402
from tests.support.processes import start_server  # noqa: E402

TEXT = "The soak test speaks this sentence again and again, to see what the service holds. "
PROMPT = wav(tone(4.0, 16000), 16000)
HOSTILE = [
    (b'{"tts_text": "hi", "seed": ' + b"9" * 5000 + b"}", "application/json"),
    (b'{"tts_text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "application/json"),
    (b"tts_text=caf%E9&spk_id=x", "application/x-www-form-urlencoded"),
    (b"not json", "application/json"),
]


GRPC_PORT = 0
KEY = "soak-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _proc(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


KINDS = ["tts", "openai", "sse", "clone", "hostile", "leave", "voices", "runtime", "dashscope", "dashscope_ws", "grpc"]


def _dashscope_ws(url: str, n: int) -> str:
    """One DashScope WebSocket task, text in two pieces; returns its last event (task-finished or task-failed)."""
    task_id = f"soak{n}"
    header = {"task_id": task_id, "streaming": "duplex"}
    params = {"voice": "longanyang", "format": rng_format(n), "sample_rate": 24000}
    run = {"model": "m", "task_group": "audio", "task": "tts", "function": "SpeechSynthesizer", "parameters": params}
    address = url.replace("http://", "ws://") + "/api-ws/v1/inference"
    with connect(address, open_timeout=30, additional_headers=AUTH) as ws:
        ws.send(json.dumps({"header": {**header, "action": "run-task"}, "payload": {**run, "input": {}}}))
        for text in (TEXT[:40], TEXT[40:]):
            ws.send(json.dumps({"header": {**header, "action": "continue-task"}, "payload": {"input": {"text": text}}}))
        ws.send(json.dumps({"header": {**header, "action": "finish-task"}, "payload": {"input": {}}}))
        while True:
            message = ws.recv(timeout=120)
            if isinstance(message, str):
                event = json.loads(message)["header"]["event"]
                if event in ("task-finished", "task-failed"):
                    return event


def rng_format(n: int) -> str:
    return ["mp3", "pcm", "wav", "opus"][n % 4]


def _grpc(port: int) -> str:
    from app.api.runtime import cosyvoice_pb2, cosyvoice_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = cosyvoice_pb2_grpc.CosyVoiceStub(channel)
        request = cosyvoice_pb2.Request(sft_request=cosyvoice_pb2.sftRequest(spk_id="中文女", tts_text=TEXT))
        try:
            answers = stub.Inference(request, timeout=120, metadata=[("authorization", AUTH["Authorization"])])
            return "OK" if sum(len(r.tts_audio) for r in answers) else "EMPTY"
        except grpc.RpcError as exc:
            return exc.code().name


def _one(client: httpx.Client, url: str, rng: random.Random, counts: collections.Counter, n: int) -> None:
    kind = rng.choice(KINDS)
    try:
        if kind == "dashscope_ws":
            counts[f"{kind} {_dashscope_ws(url, n)}"] += 1
            return
        if kind == "grpc":
            counts[f"{kind} {_grpc(GRPC_PORT)}"] += 1
            return
        if kind == "runtime":
            data = {"tts_text": TEXT, "spk_id": "英文女"}
            response = client.post(f"{url}/inference_sft", data=data)
        elif kind == "dashscope":
            body = {"model": "m", "input": {"text": TEXT, "voice": "longanyang", "format": rng_format(n)}}
            headers = {"X-DashScope-SSE": "enable"} if n % 2 else {}
            response = client.post(f"{url}/api/v1/services/audio/tts/SpeechSynthesizer", json=body, headers=headers)
        elif kind == "tts":
            response = client.post(f"{url}/tts", json={"tts_text": TEXT, "spk_id": "英文男"})
        elif kind == "openai":
            body = {
                "model": "tts-1",
                "voice": "alloy",
                "input": TEXT,
                "response_format": rng.choice(["mp3", "opus", "aac", "flac", "wav", "pcm"]),
            }
            response = client.post(f"{url}/v1/audio/speech", json=body)
        elif kind == "sse":
            body = {"model": "tts-1", "voice": "onyx", "input": TEXT, "stream_format": "sse"}
            response = client.post(f"{url}/v1/audio/speech", json=body)
        elif kind == "clone":
            data = {"spk_id": f"soak{n % 8}", "prompt_text": TEXT, "overwrite": "true"}
            response = client.post(f"{url}/clone", data=data, files={"prompt_audio": ("p.wav", PROMPT)})
        elif kind == "hostile":
            body, media_type = rng.choice(HOSTILE)
            response = client.post(f"{url}/tts", content=body, headers={"content-type": media_type})
        elif kind == "voices":
            response = client.get(f"{url}/get_available_spks")
        else:  # a client that leaves after the first bytes
            with client.stream("POST", f"{url}/tts", json={"tts_text": TEXT * 20, "spk_id": "中文女"}) as response:
                next(response.iter_raw())
            counts[f"{kind} {response.status_code}"] += 1
            return
        counts[f"{kind} {response.status_code}"] += 1
    except (httpx.HTTPError, OSError, TimeoutError, ConnectionClosed) as exc:
        counts[f"{kind} {type(exc).__name__}"] += 1


def _large_bodies(url: str, pid: int, count: int = 20, megabytes: float = 19.5) -> dict:
    """Sends `count` JSON bodies of `megabytes` at once (over the buffered budget together) and samples RSS."""
    body = b'{"tts_text": "' + b"a" * int(megabytes * 1024 * 1024) + b'", "spk_id": "x"}'
    before, peak, statuses = _proc(pid)["rss_mb"], 0.0, collections.Counter()

    def send() -> None:
        try:
            with httpx.Client(timeout=120, headers=AUTH) as client:
                response = client.post(f"{url}/tts", content=body, headers={"content-type": "application/json"})
            statuses[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1

    senders = [threading.Thread(target=send) for _ in range(count)]
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders):
        peak = max(peak, _proc(pid)["rss_mb"])
        time.sleep(0.05)
    time.sleep(2)
    return {"before": before, "peak": peak, "after": _proc(pid)["rss_mb"], "statuses": dict(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=16)  # 4x the default concurrency limit
    parser.add_argument("--keys-oss", action="store_true", help="API keys on, OSS storage, an outage mid-run")
    args = parser.parse_args()
    oss = OssServer(access_key_id="soak-ak", access_key_secret="soak-sk", bucket="soak", region="cn-beijing")
    if args.keys_oss:
        oss.__enter__()

    global GRPC_PORT
    data_dir, port, GRPC_PORT = Path(tempfile.mkdtemp(prefix="soak-")), _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "COSYVOICE_ENGINE": "espeak",
        "COSYVOICE_DATA_DIR": str(data_dir),
        "COSYVOICE_LOG_LEVEL": "WARNING",
        "COSYVOICE_GRPC_PORT": str(GRPC_PORT),
    }
    if args.keys_oss:
        (data_dir / "keys").write_text(f"{KEY} alice\n")
        env |= {
            "COSYVOICE_API_KEYS_FILE": str(data_dir / "keys"),
            "COSYVOICE_STORAGE": "oss",
            "COSYVOICE_OSS_ENDPOINT": oss.endpoint,
            "COSYVOICE_OSS_BUCKET": "soak",
            "COSYVOICE_OSS_REGION": "cn-beijing",
            "OSS_ACCESS_KEY_ID": "soak-ak",
            "OSS_ACCESS_KEY_SECRET": "soak-sk",
        }
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        command = [sys.executable, "-m", "app.server", "--port", str(port)]
        server = start_server(command, env, port, stdout=subprocess.DEVNULL, stderr=log)
    start = _proc(server.pid)
    counts: collections.Counter = collections.Counter()
    peak = dict(start)
    health: list[float] = []
    stop = time.monotonic() + args.seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=120, headers=AUTH) as client:
            n = 0
            while time.monotonic() < stop:
                _one(client, url, rng, counts, seed * 100_000 + n)
                n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
    for thread in threads:
        thread.start()
    outage = (stop - args.seconds * 2 / 3, stop - args.seconds / 3) if args.keys_oss else (stop, stop)
    with httpx.Client(timeout=30) as probe:
        while time.monotonic() < stop:
            if outage[0] <= time.monotonic() < outage[1]:
                oss.fail_next(10**9, status=503)
            elif time.monotonic() >= outage[1]:
                oss.fail_next(0)
            started = time.perf_counter()
            probe.get(f"{url}/health")
            health.append(time.perf_counter() - started)
            now = _proc(server.pid)
            peak = {k: max(peak[k], now[k]) for k in peak}
            time.sleep(0.2)
    for thread in threads:
        thread.join()
    time.sleep(2)
    end = _proc(server.pid)
    large = _large_bodies(url, server.pid)
    server.terminate()
    server.wait(30)
    if args.keys_oss:
        oss.__exit__(None, None, None)
    stray = [p.name for p in data_dir.rglob("*") if p.name.endswith((".tmp", ".new"))]
    failures = ("task-failed", "INTERNAL", "UNKNOWN")  # the WebSocket's and gRPC's way of saying 5xx
    unavailable = sum(v for k, v in counts.items() if k.split()[-1] == "503")  # the documented storage outage
    errors = sum(v for k, v in counts.items() if k.split()[-1].startswith("5") or k.split()[-1] in failures)
    errors -= unavailable
    tracebacks = log_path.read_text(errors="replace").count("Traceback")
    mode = ", API keys, OSS with an outage through the middle third" if args.keys_oss else ""
    print(f"soak: {args.seconds:g} s, {args.workers} clients{mode}, {sum(counts.values())} requests")
    for key in sorted(counts):
        print(f"  {key:28} {counts[key]}")
    print(f"5xx other than 503 (and failed tasks or RPCs): {errors}   503: {unavailable}")
    print(f"tracebacks in the server log: {tracebacks}")
    print(f"temp files left: {len(stray)}")
    p50, p99 = statistics.median(health) * 1000, float(np.percentile(health, 99)) * 1000
    print(f"/health: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(health)} probes)")
    print(f"RSS MB: start {start['rss_mb']:.0f}, peak {peak['rss_mb']:.0f}, end {end['rss_mb']:.0f}")
    print(
        f"20 concurrent 19.5 MB JSON bodies: RSS MB before {large['before']:.0f}, peak {large['peak']:.0f}, "
        f"after {large['after']:.0f}; answers {large['statuses']}"
    )
    print(f"threads: start {start['threads']}, end {end['threads']}; fds: start {start['fds']}, end {end['fds']}")


if __name__ == "__main__":
    main()
