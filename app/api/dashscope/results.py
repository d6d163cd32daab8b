"""Synthesized audio kept for a while, so that the HTTP synthesizer's ``output.audio.url`` can be fetched: bounded
in total bytes and in age, oldest out first (memory only: a URL outlives neither a restart nor its hour)."""

import collections
import secrets
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    data: bytes
    media_type: str
    expires_at: float


class Results:
    def __init__(self, max_bytes: int, ttl_seconds: float):
        self.max_bytes, self.ttl = max_bytes, ttl_seconds
        self._items: collections.OrderedDict[str, Result] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, media_type: str) -> tuple[str, Result]:
        """An id for ``data`` (one larger than the whole store is not kept: its URL answers 404)."""
        result_id = secrets.token_hex(16)
        result = Result(data, media_type, time.time() + self.ttl)
        if len(data) > self.max_bytes:
            return result_id, result
        with self._lock:
            self._items[result_id] = result
            self._bytes += len(data)
            self._expire()
        return result_id, result

    def get(self, result_id: str) -> Result | None:
        with self._lock:
            self._expire()
            return self._items.get(result_id)

    def _expire(self) -> None:
        now = time.time()
        while self._items:
            oldest_id, oldest = next(iter(self._items.items()))
            if oldest.expires_at > now and self._bytes <= self.max_bytes:
                break
            del self._items[oldest_id]
            self._bytes -= len(oldest.data)
