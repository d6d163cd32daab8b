#!/usr/bin/env bash
# Install the CosyVoice engine's dependencies into an existing venv that already holds the service
# (torch==2.13.0, numpy>=1.26.4,<2.6), from PyPI only. Which upstream code the engine runs is chosen by
# scripts/use_upstream.sh.
#
# The cosyvoice2-fr-infer wheel (June 2025 upstream, CosyVoice2 only) is installed in every case: it serves
# when there is no upstream checkout, and it carries `matcha`, which upstream's CosyVoice2 flow imports.
#
#   usage: install_cosyvoice.sh VENV_DIR
#   env:   WITH_WETEXTPROCESSING=1  also install WeTextProcessing 1.0.4.1 + pynini 2.1.6 (~670 MB) so the
#                                   fr-infer frontend's `tn` normalisers import for real (no shim needed)
set -euo pipefail

VENV=${1:?usage: install_cosyvoice.sh VENV_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "no python at $PY" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

pipi() { "$PY" -m pip install --disable-pip-version-check "$@"; }

# 1. Guard rails: the service's torch and numpy must be there and must not move.
read -r TORCH_V NUMPY_V < <("$PY" -c 'import torch, numpy; print(torch.__version__, numpy.__version__)')
case "$TORCH_V" in
  2.13.0|2.13.0+*) ;;  # +cpu here; a CUDA build (make install TORCH_INDEX=...) on a GPU machine
  *) echo "expected torch 2.13.0 in $VENV, found $TORCH_V" >&2; exit 1 ;;
esac
"$PY" - "$NUMPY_V" <<'EOF'
import sys
v = tuple(int(x) for x in sys.argv[1].split(".")[:2])
if not ((1, 26) <= v < (2, 6)):
    sys.exit(f"numpy {sys.argv[1]} outside the range the engine supports (>=1.26.4,<2.6: scipy 1.17 / numba 0.68)")
EOF
printf 'torch==2.13.0\nnumpy==%s\n' "$NUMPY_V" > "$WORK/constraints.txt"

# 2. Curated dependencies (pinned).
pipi -c "$WORK/constraints.txt" -r "$HERE/requirements-cosyvoice.txt"

# 3. Packages whose declared dependencies are wrong for us: install them without dependencies.
#    cosyvoice2-fr-infer pins numpy==1.26, transformers==4.40.1, deepspeed, onnxruntime-gpu, ...
#    openai-whisper would pull triton; its real runtime deps are in the requirements file.
pipi -c "$WORK/constraints.txt" --no-deps cosyvoice2-fr-infer==0.1.5 openai-whisper==20250625

# 4. torchaudio: the PyPI 2.11.0 wheel carries native libs built against CUDA torch 2.11
#    (libc10_cuda.so) that fail to load with torch 2.13 CPU, and torchaudio loads them at import.
#    torchaudio skips its extension when torchaudio/lib/*.so are absent, and the parts the engine
#    uses (compliance.kaldi.fbank, transforms.Resample) are pure Python. So repack the wheel
#    without the .so files (RECORD kept consistent) and install that.
"$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: -d "$WORK/dl" torchaudio==2.11.0
TA_WHL=$(ls "$WORK"/dl/torchaudio-2.11.0-*.whl)
mkdir -p "$WORK/repacked"
"$PY" - "$TA_WHL" "$WORK/repacked/$(basename "$TA_WHL")" <<'EOF'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
drop = lambda name: name.startswith("torchaudio/lib/") and ".so" in name.rsplit("/", 1)[-1]
dropped = []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if drop(info.filename):
            dropped.append(info.filename)
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(l for l in lines if not drop(l.split(",", 1)[0])).encode()
        zout.writestr(info, data)
if not dropped:
    sys.exit("torchaudio wheel layout changed: no torchaudio/lib/*.so found")
print("torchaudio repacked without:", ", ".join(dropped))
EOF
pipi --no-deps --force-reinstall "$WORK/repacked/$(basename "$TA_WHL")"

# 5. Optional: the real WeTextProcessing (pulls pynini, ~670 MB installed).
if [ "${WITH_WETEXTPROCESSING:-0}" = 1 ]; then
  pipi -c "$WORK/constraints.txt" WeTextProcessing==1.0.4.1 pynini==2.1.6 importlib_resources
fi

# 6. Verify: torch/numpy untouched, torchaudio pure-Python parts work, whole import chain imports.
"$PY" - "$TORCH_V" "$NUMPY_V" "$HERE" <<'EOF'
import sys
import torch, numpy
assert torch.__version__ == sys.argv[1], f"torch changed: {torch.__version__}"
assert numpy.__version__ == sys.argv[2], f"numpy changed: {numpy.__version__}"
import torchaudio, torchaudio.compliance.kaldi as kaldi
assert not torchaudio._extension._IS_TORCHAUDIO_EXT_AVAILABLE
x = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)[None]
assert kaldi.fbank(x, num_mel_bins=80, dither=0, sample_frequency=16000).shape == (98, 80)
assert torchaudio.transforms.Resample(16000, 24000)(x).shape == (1, 24000)
sys.path.insert(0, sys.argv[3])
from app.engines.cosyvoice import import_upstream  # the adapter's own import path (tn stand-in included)
import_upstream(None)
from cosyvoice.cli.cosyvoice import CosyVoice2  # noqa: F401
from cosyvoice.cli.frontend import CosyVoiceFrontEnd  # noqa: F401
from cosyvoice.cli.model import CosyVoice2Model  # noqa: F401
import cosyvoice.flow.flow, cosyvoice.flow.flow_matching, cosyvoice.flow.decoder  # noqa: F401,E401
import cosyvoice.hifigan.generator, cosyvoice.llm.llm, cosyvoice.transformer.upsample_encoder  # noqa: F401,E401
import cosyvoice.tokenizer.tokenizer, cosyvoice.utils.common, matcha.models.components.flow_matching  # noqa: F401,E401
print(f"cosyvoice engine OK: torch {torch.__version__}, numpy {numpy.__version__}, torchaudio {torchaudio.__version__} (no native ext)")
EOF
