"""A callback for the DashScope SDK's SpeechSynthesizer that records everything it is given."""

import json
import threading

from dashscope.audio.tts_v2 import ResultCallback


class Recorder(ResultCallback):
    def __init__(self):
        self.audio = bytearray()
        self.events: list[dict] = []
        self.first_audio = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None

    def on_data(self, data: bytes) -> None:
        self.audio += data
        self.first_audio.set()

    def on_event(self, message: str) -> None:
        self.events.append(json.loads(message))

    def on_complete(self) -> None:
        self.done.set()

    def on_error(self, message) -> None:
        self.error = str(message)
        self.done.set()
