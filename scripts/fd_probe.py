"""Out of file descriptors: what an existing connection and the process see while every descriptor is taken.

Starts the service (`python -m app.server`, embedded engine) under a descriptor limit, measures /health on a
keep-alive connection opened beforehand, then holds more idle connections than the limit allows and measures again,
with the process's CPU use meanwhile (asyncio retries accept() once a second when it runs out), then after they
are closed. Prints figures; asserts nothing. Usage: ``python scripts/fd_probe.py --limit 128 --hold 300``.
"""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import start_server  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _p50_ms(client: httpx.Client, url: str, count: int = 40) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get(f"{url}/health")
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=128, help="the server's descriptor limit (ulimit -n)")
    parser.add_argument("--hold", type=int, default=300, help="idle connections to hold")
    args = parser.parse_args()
    port = free_port()
    env = {
        **os.environ,
        "COSYVOICE_ENGINE": "espeak",
        "COSYVOICE_DATA_DIR": tempfile.mkdtemp(prefix="fd-probe-"),
        "COSYVOICE_LOG_LEVEL": "WARNING",
    }

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.limit, args.limit))

    command = [sys.executable, "-m", "app.server", "--port", str(port)]
    server = start_server(command, env, port, preexec_fn=limit, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as client:
            cpu, started = _cpu_seconds(server.pid), time.monotonic()
            before = _p50_ms(client, url)
            calm = (_cpu_seconds(server.pid) - cpu) / (time.monotonic() - started)
            held = []
            for _ in range(args.hold):
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
                except OSError:
                    break
            time.sleep(1)
            cpu, started = _cpu_seconds(server.pid), time.monotonic()
            during = _p50_ms(client, url)
            busy = (_cpu_seconds(server.pid) - cpu) / (time.monotonic() - started)
            for sock in held:
                sock.close()
            time.sleep(2)
            after = _p50_ms(client, url)
        print(f"descriptor limit {args.limit}, {len(held)} idle connections held")
        figures = f"before {before:.1f} ms, exhausted {during:.1f} ms, after {after:.1f} ms"
        print(f"/health p50 on a connection opened before: {figures}")
        print(f"the process answering those: {calm:.2f} of a core before, {busy:.2f} while exhausted")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
