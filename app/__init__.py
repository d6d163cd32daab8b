"""CosyVoice voice service: a FastAPI server around CosyVoice and an embedded espeak-ng engine."""
