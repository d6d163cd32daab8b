"""Upstream's gRPC client for the tests: stubs generated from upstream's proto (ours where upstream's code is not
at hand), and calls made in a client process of its own (grpc_client.py beside this file)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soxr
from grpc_tools import protoc

from tests.support.audio import decode

OUR_PROTO = Path(__file__).resolve().parents[2] / "app" / "api" / "runtime" / "cosyvoice.proto"
CLIENT = Path(__file__).resolve().parent / "grpc_client.py"


def upstream_proto() -> Path | None:
    """Upstream's cosyvoice.proto beside COSYVOICE_SRC: in a git checkout, or in the pinned copy CI has."""
    src = os.environ.get("COSYVOICE_SRC")
    if not src:
        return None
    for candidate in (Path(src) / "runtime/python/grpc/cosyvoice.proto", Path(src).parent / "cosyvoice.proto"):
        if candidate.is_file():
            return candidate
    return None


def generate_stubs(proto: Path, out: Path) -> Path:
    code = protoc.main(["protoc", f"-I{proto.parent}", f"--python_out={out}", f"--grpc_python_out={out}", str(proto)])
    assert code == 0, f"protoc failed on {proto}"
    return out


def raw_prompt(wav_file: bytes, tmp_path: Path) -> Path:
    """A prompt as upstream's gRPC client sends it: raw int16 mono at 16 kHz."""
    decoded = decode(wav_file)
    samples = soxr.resample(decoded.samples, decoded.rate, 16000)
    path = tmp_path / "prompt16k.pcm"
    path.write_bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def call(stubs: Path, port: int, calls: list[dict]) -> list[dict]:
    """Each call's answer: {"chunks", "audio": bytes} or {"code", "details"}."""
    done = subprocess.run(
        [sys.executable, str(CLIENT), str(stubs), f"127.0.0.1:{port}"],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    for result in results:
        if "audio_file" in result:
            result["audio"] = Path(result.pop("audio_file")).read_bytes()
    return results
