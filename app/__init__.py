"""CosyVoice voice service: a FastAPI server around CosyVoice and an embedded espeak-ng engine."""

import os

# Upstream CosyVoice runs its LLM in a thread beside the flow/vocoder; with OpenMP's default busy
# waiting, the two thread pools spin against each other on small machines (measured 5-10x slower).
# This must be set before torch is first imported, which this package's import always precedes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Upstream also wraps every request in a tqdm progress bar; a server log has no use for them.
os.environ.setdefault("TQDM_DISABLE", "1")
