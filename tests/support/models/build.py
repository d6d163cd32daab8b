"""Write a random CosyVoice model dir, or reuse one built before with the same code and settings."""

import argparse
import contextlib
import fcntl
import hashlib
import os
import random
import shutil
import sys
import time
from pathlib import Path

from tests.support.models.configs import FULL, TINY, render_yaml
from tests.support.models.qwen import write_qwen, write_tokenizer
from tests.support.models.stopping import make_v2_stop, make_v3_stop
from tests.support.models.stubs import SPK_EMBED_DIM, write_campplus, write_speech_tokenizer

SIZES = {"tiny": TINY, "full": FULL}
SFT_SPEAKERS = ("中文女", "英文男")


@contextlib.contextmanager
def _caller_rng_kept():
    """Seeding (ours, and the yaml's __set_seed lines) must not leak into the caller's RNGs."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def build_model(model_dir: Path, generation: int = 2, size: str = "tiny", seed: int = 0) -> Path:
    """Write a complete model dir; needs upstream's ``cosyvoice`` importable (the code that will run it)."""
    import numpy as np
    import torch
    from hyperpyyaml import load_hyperpyyaml

    model_dir = Path(model_dir)
    qwen_dir = model_dir / "CosyVoice-BlankEN"
    qwen_dir.mkdir(parents=True, exist_ok=True)
    yaml_text = render_yaml(generation, SIZES[size], seed, size)
    (model_dir / f"cosyvoice{generation}.yaml").write_text(yaml_text, encoding="utf-8")
    with _caller_rng_kept():
        write_tokenizer(qwen_dir)
        write_qwen(qwen_dir, SIZES[size], seed)
        # build the modules exactly as upstream will, so that the state dicts match
        configs = load_hyperpyyaml(yaml_text, overrides={"qwen_pretrain_path": str(qwen_dir)})
    llm = configs["llm"]
    (make_v3_stop if generation == 3 else make_v2_stop)(llm)
    torch.save(llm.state_dict(), model_dir / "llm.pt")
    torch.save(configs["flow"].state_dict(), model_dir / "flow.pt")
    torch.save(configs["hift"].state_dict(), model_dir / "hift.pt")
    rng = np.random.default_rng(seed)
    write_campplus(model_dir / "campplus.onnx", rng)
    write_speech_tokenizer(model_dir / f"speech_tokenizer_v{generation}.onnx", rng)
    # built-in SFT speakers, in upstream's format: spk2info[name]['embedding'] is (1, 192)
    generator = torch.Generator().manual_seed(seed)
    spk2info = {name: {"embedding": torch.randn(1, SPK_EMBED_DIM, generator=generator)} for name in SFT_SPEAKERS}
    torch.save(spk2info, model_dir / "spk2info.pt")
    return model_dir


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cosyvoice-service" / "models"
    return Path(os.environ.get("COSYVOICE_MODEL_CACHE", default))


def _name(generation: int, size: str, seed: int) -> tuple[str, str]:
    """(kind, fingerprint): the fingerprint changes with the builder, the settings or the upstream code."""
    import cosyvoice

    code = Path(cosyvoice.__file__).resolve()
    origin = "wheel" if "site-packages" in code.parts else "upstream"
    checkout = hashlib.sha256(str(Path(__file__).resolve().parents[3]).encode()).hexdigest()[:6]  # the repo root
    kind = f"cosyvoice{generation}-{size}-{origin}-{checkout}"  # each checkout keeps its own builds
    digest = hashlib.sha256(f"{generation}/{size}/{seed}/{code}".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return kind, digest.hexdigest()[:12]


def cached_model(generation: int = 2, size: str = "tiny", seed: int = 0) -> Path:
    """A model dir built once per code version and kept in the cache (older builds of its kind are removed);
    safe with parallel test processes."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    kind, fingerprint = _name(generation, size, seed)
    final = root / f"{kind}-{fingerprint}"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "spk2info.pt").is_file():
            for older in root.glob(f"{kind}-*"):
                shutil.rmtree(older, ignore_errors=True)
            partial = root / f".{final.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            build_model(partial, generation, size, seed)
            partial.rename(final)
    return final


def working_copy(model_dir: Path, into: Path) -> Path:
    """A dir of ``model_dir``'s model files as links, with a copy of its spk2info.pt: a service running on it
    may clone voices (spk2info.pt, voice_sources/) without touching the cached model."""
    into.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        target = into / item.name
        if item.name == "spk2info.pt":
            shutil.copy(item, target)
        elif item.name != "voice_sources" and not item.name.startswith("."):
            target.unlink(missing_ok=True)  # a link left by an earlier copy
            target.symlink_to(item)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a random CosyVoice model dir.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--generation", type=int, choices=(2, 3), default=2)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build_model(args.out_dir, args.generation, args.size, args.seed)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
