"""Load test on loopback: `make load-test` (bounded in time and in requests).

Starts `python -m app.server` (the embedded engine, or what COSYVOICE_* says) with COSYVOICE_MAX_CONCURRENCY=N
and COSYVOICE_MAX_QUEUED=Q, drives FACTOR x N clients that each ask for speech again and again (after a 429,
again when its Retry-After says, at most 1 s later), probes /health every 20 ms from a process of its own, and
samples the server's memory. Prints what every request got (completed or 429, and how long it took), the
probe's latency percentiles, and the server's memory at start, peak and end.
"""

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home again before the rain."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def probe_health(url: str, seconds: float, results) -> None:
    """In a process of its own, so the load generator's work does not delay the probe's own clock."""
    latencies, failures = [], 0
    with httpx.Client(timeout=5) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                ok = client.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            failures += not ok
            time.sleep(0.02)
    results.put((latencies, failures))


async def speaker(client: httpx.AsyncClient, url: str, end: float, budget: list[int], outcomes: list) -> None:
    while time.monotonic() < end and budget[0] > 0:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            response = await client.post(f"{url}/tts", json={"tts_text": TEXT, "spk_id": "英文男"}, timeout=120)
            status = response.status_code
            retry_after = response.headers.get("retry-after")
        except httpx.HTTPError as exc:
            status, retry_after = type(exc).__name__, None
        outcomes.append((status, time.perf_counter() - started, retry_after))
        if status == 429:  # a client that honours Retry-After, but keeps the pressure on
            await asyncio.sleep(min(float(retry_after or 1), 1.0))


async def drive(url: str, clients: int, seconds: float, max_requests: int, pid: int) -> tuple[list, list]:
    outcomes, memory, budget = [], [], [max_requests]
    end = time.monotonic() + seconds

    async def sample_memory():
        while time.monotonic() < end:
            memory.append(rss_mb(pid))
            await asyncio.sleep(0.5)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 4)) as client:
        await asyncio.gather(sample_memory(), *(speaker(client, url, end, budget, outcomes) for _ in range(clients)))
    return outcomes, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--factor", type=int, default=4, help="clients per engine slot")
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--max-queued", type=int, default=2, help="requests that may wait for a slot")
    parser.add_argument("--queue-timeout", type=float, default=10.0)
    args = parser.parse_args()

    port, data = free_port(), tempfile.mkdtemp(prefix="load-test-")
    env = {
        **{k: v for k, v in os.environ.items() if k != "COSYVOICE_API_KEYS_FILE"},
        "COSYVOICE_DATA_DIR": data,
        "COSYVOICE_MAX_CONCURRENCY": str(args.max_concurrency),
        "COSYVOICE_QUEUE_TIMEOUT_SECONDS": str(args.queue_timeout),
        "COSYVOICE_MAX_QUEUED": str(args.max_queued),
        "COSYVOICE_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, "-m", "app.server", "--host", "127.0.0.1", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            sys.exit("the server did not start within a minute")
        httpx.post(f"{url}/tts", json={"tts_text": TEXT, "spk_id": "英文男"}, timeout=60)  # warm up
        start_mb = rss_mb(server.pid)
        results = multiprocessing.get_context("spawn").Queue()
        probe = multiprocessing.get_context("spawn").Process(target=probe_health, args=(url, args.seconds, results))
        probe.start()
        clients = args.factor * args.max_concurrency
        outcomes, memory = asyncio.run(drive(url, clients, args.seconds, args.max_requests, server.pid))
        health, health_failures = results.get(timeout=args.seconds + 30)
        probe.join()
        end_mb = rss_mb(server.pid)
        metrics = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        queued = next(f.samples[0].value for f in metrics if f.name == "cosyvoice_syntheses_queued")
    finally:
        server.terminate()
        server.wait(30)

    done = [t for status, t, _ in outcomes if status == 200]
    busy = [t for status, t, _ in outcomes if status == 429]
    other = [status for status, _, _ in outcomes if status not in (200, 429)]
    ms = 1000
    slots = f"{args.factor}x the {args.max_concurrency} engine slots, {args.max_queued} may wait"
    print(f"{clients} clients ({slots}) for {args.seconds:g} s")
    print(f"requests: {len(outcomes)}; completed {len(done)}, 429 {len(busy)}, other {len(other)} {other[:5]}")
    if done:
        p50, p99 = percentile(done, 0.5), percentile(done, 0.99)
        print(f"completed in: p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(done):.2f} s")
    if busy:
        print(f"429 answered in: p50 {percentile(busy, 0.5) * ms:.1f} ms, max {max(busy) * ms:.1f} ms")
    print(
        f"/health: {len(health)} probes, {health_failures} failed; p50 {statistics.median(health) * ms:.1f} ms, "
        f"p99 {percentile(health, 0.99) * ms:.1f} ms, max {max(health) * ms:.1f} ms"
    )
    print(f"server RSS: {start_mb:.0f} MB after warm-up, peak {max(memory):.0f} MB, end {end_mb:.0f} MB")
    print(f"waiting at the end: {queued:g}")
    limit_ok = not other and (not busy or max(busy) < args.queue_timeout)
    print("every request completed or got a 429 within the limit:", "yes" if limit_ok else "NO")
    sys.exit(0 if limit_ok else 1)


if __name__ == "__main__":
    main()
