#!/usr/bin/env bash
# Choose the upstream CosyVoice code the engine runs (FunAudioLLM/CosyVoice at COSYVOICE_COMMIT, CosyVoice2
# and CosyVoice3) and record its path in VENV/cosyvoice-src, which the Makefile passes on as COSYVOICE_SRC:
#   1. COSYVOICE_SRC, when set: a checkout of that commit (nothing is fetched);
#   2. otherwise what was recorded before, while it is there;
#   3. otherwise a shallow git fetch of the commit into the cache (needs github.com);
#   4. otherwise nothing: the cosyvoice2-fr-infer wheel serves, CosyVoice2 only. The next run tries again.
# Cheap when nothing changed: `make install-cosyvoice` runs it every time.
#
#   usage: use_upstream.sh VENV_DIR
set -euo pipefail

VENV=${1:?usage: use_upstream.sh VENV_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMMIT=${COSYVOICE_COMMIT:?the Makefile names the upstream commit}
RECORD="$VENV/cosyvoice-src"
CACHED=${XDG_CACHE_HOME:-$HOME/.cache}/cosyvoice-service/upstream/CosyVoice-${COMMIT:0:7}
recorded=$(cat "$RECORD" 2>/dev/null || true)
is_checkout() { [ -n "$1" ] && [ -f "$1/cosyvoice/cli/cosyvoice.py" ]; }

if [ -n "${COSYVOICE_SRC:-}" ]; then
  SRC=$(cd "$COSYVOICE_SRC" && pwd)
elif is_checkout "$recorded" && [[ "$recorded" != */cosyvoice-service/upstream/* || "$recorded" == "$CACHED" ]]; then
  SRC=$recorded  # a checkout given before, or the fetched copy of this commit
elif is_checkout "$CACHED"; then
  SRC=$CACHED
else
  echo "upstream CosyVoice: fetching FunAudioLLM/CosyVoice@${COMMIT:0:7} into $CACHED"
  rm -rf "$CACHED.partial" && mkdir -p "$CACHED.partial"
  if git -C "$CACHED.partial" init -q \
    && timeout 120 git -C "$CACHED.partial" -c http.lowSpeedLimit=1000 -c http.lowSpeedTime=30 \
      fetch -q --depth 1 https://github.com/FunAudioLLM/CosyVoice.git "$COMMIT" \
    && git -C "$CACHED.partial" -c advice.detachedHead=false checkout -q FETCH_HEAD; then
    rm -rf "$CACHED" && mv "$CACHED.partial" "$CACHED"
    SRC=$CACHED
  else
    rm -rf "$CACHED.partial"
    SRC=""
    echo "upstream CosyVoice: could not fetch it (no access to github.com?). Using the cosyvoice2-fr-infer" \
      "wheel: CosyVoice2 only. CosyVoice3 needs the upstream code: set COSYVOICE_SRC to a checkout of" \
      "FunAudioLLM/CosyVoice at ${COMMIT:0:7}." >&2
  fi
fi

if [ -f "$RECORD" ] && [ "$SRC" = "$recorded" ]; then
  exit 0
fi
if [ -n "$SRC" ]; then
  "$VENV/bin/python" - "$SRC" "$HERE" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from app.engines.cosyvoice import import_upstream
upstream, _ = import_upstream(Path(sys.argv[1]))
assert hasattr(upstream, "CosyVoice3"), f"{upstream.__file__} has no CosyVoice3"
import cosyvoice.flow.DiT.dit, cosyvoice.hifigan.generator, cosyvoice.llm.llm  # noqa: F401,E401
print(f"upstream CosyVoice: CosyVoice2 and CosyVoice3 from {Path(upstream.__file__).parents[2]}")
PY
fi
printf '%s\n' "$SRC" > "$RECORD"
