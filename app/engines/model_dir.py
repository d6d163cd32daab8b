"""Which CosyVoice generation a model dir holds, from its config file (as upstream's AutoModel decides)."""

from pathlib import Path

_CONFIGS = ((1, "cosyvoice.yaml"), (2, "cosyvoice2.yaml"), (3, "cosyvoice3.yaml"))


def cosyvoice_generation(model_dir: Path) -> int | None:
    """1, 2 or 3 for CosyVoice-300M, CosyVoice2 or CosyVoice3; None when the dir holds no CosyVoice model."""
    return next((generation for generation, name in _CONFIGS if (model_dir / name).is_file()), None)
