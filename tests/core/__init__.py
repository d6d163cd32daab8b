"""The core, whatever the door: formats and MP3, streaming, the voice library and cloning, prompt uploads, the
service, metrics."""
