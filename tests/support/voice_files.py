"""Voice files as an attacker (or a broken disk) would leave them in a user's storage."""

import io
import os

import torch


class Payload:
    """A pickle that runs code when unpickled, if anything ever unpickles it unsafely."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_voice_files(tmp_path) -> dict[str, bytes]:
    """By kind, the bytes of a voice file the embedded engine must refuse; the "code" one, if ever unpickled,
    creates ``tmp_path / "pwned"``."""

    def saved(obj) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    good = saved({"engine": "espeak", "variant": "male", "pitch": 50, "range": 50, "rate": 175})
    return {
        "code": saved({"engine": "espeak", "payload": Payload(tmp_path / "pwned")}),
        "truncated": good[: len(good) // 2],
        "not_torch": b"this is not a voice file",
        "wrong_model": saved({"embedding": torch.zeros(1, 192)}),
        "bad_values": saved({"engine": "espeak", "variant": "robot", "pitch": 500, "range": 50, "rate": 175}),
        "odd_types": saved({"engine": "espeak", "variant": ["male"], "pitch": True, "range": 50, "rate": 175}),
    }
