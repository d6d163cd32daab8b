"""A voice's flow prefixes, kept by the content of its prompt (``Pipeline.prefix`` makes and copies them)."""

import hashlib
import threading
from collections import OrderedDict

import torch

from app.engines.cosyvoice.flow import FlowPrefix


class PromptCache:
    """Voices' flow prefixes by content (a voice restored from storage finds its prefix), bounded in bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._entries: OrderedDict[str, FlowPrefix] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> FlowPrefix | None:
        with self._lock:
            prefix = self._entries.get(key)
            if prefix is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return prefix

    def put(self, key: str, prefix: FlowPrefix) -> bool:
        """Keep ``prefix``; False when it is not kept (over the whole budget, or another is already kept)."""
        size = prefix.nbytes()
        with self._lock:
            if size > self.budget or key in self._entries:
                return False
            self._entries[key] = prefix
            self._bytes += size
            while self._bytes > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes()
        return True

    @property
    def nbytes(self) -> int:
        return self._bytes


def fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
