#!/usr/bin/env bash
# Prepare what the GPU benchmark (scripts/gpu_bench.sh) needs on a bare CUDA machine with Python 3.12 and
# torch (a device machine that reaches no registry): the engine's pure-Python needs and the versions it pins,
# as cp312 wheels, and upstream CosyVoice's package at the pinned commit. Written to .gpu/ (git ignores it).
#
#   usage: scripts/gpu_bundle.sh [VENV]     (COSYVOICE_SRC: the upstream checkout; default the recorded one)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$HERE/.venv}
SRC=${COSYVOICE_SRC:-$(cat "$VENV/cosyvoice-src" 2>/dev/null || true)}
[ -f "$SRC/cosyvoice/cli/cosyvoice.py" ] || { echo "set COSYVOICE_SRC to upstream's checkout" >&2; exit 1; }
OUT=$HERE/.gpu
rm -rf "$OUT" && mkdir -p "$OUT/wheels" "$OUT/upstream"

# Not in the device's image (or there in another version): what the engine, upstream's modules and the
# model builder import, pinned as requirements-cosyvoice.txt and pyproject.toml pin them.
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0
  typing-inspection==0.4.5 python-dotenv==1.2.4 soxr==1.1.0
  transformers==4.51.3 tokenizers==0.21.4 huggingface_hub==0.36.2
  HyperPyYAML==1.2.3 ruamel.yaml==0.18.17 ruamel.yaml.clib==0.2.15
  diffusers==0.29.2 conformer==0.3.2 omegaconf==2.3.1 hydra-core==1.3.8 gdown==6.5.1 beautifulsoup4==4.15.0
  soupsieve==4.1.2 modelscope==1.40.2 modelscope-hub==0.5.1 inflect==7.6.0 typeguard==4.6.0 more-itertools==11.2.1
  librosa==0.11.0 audioread==3.1.0 pooch==1.9.0 soundfile==0.14.0 decorator==5.3.1 cffi==2.1.1 pycparser==3.12
  platformdirs==4.14.7 x-transformers==2.11.24 einx==0.4.3 loguru==0.7.3 frozendict==2.5.1
  cryptography==50.0.2 jaraco.functools==4.6.0
  cosyvoice2-fr-infer==0.1.5
)
PLATFORMS=()
for n in 17 24 27 28 31 34; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
"$VENV/bin/pip" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" --platform manylinux2014_x86_64 --platform any -d "$OUT/wheels" "${WHEELS[@]}"
# sdists only: pure Python, built here
"$VENV/bin/pip" wheel --quiet --no-deps -w "$OUT/wheels" antlr4-python3-runtime==4.9.3 wget==3.2 \
  openai-whisper==20250625

# upstream's package at the pinned commit (the device machine has no network): never committed
cp -r "$SRC/cosyvoice" "$OUT/upstream/"
find "$OUT/upstream" -name '__pycache__' -prune -exec rm -rf {} +
du -sh "$OUT/wheels" "$OUT/upstream"
