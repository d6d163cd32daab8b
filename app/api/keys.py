"""API keys (``COSYVOICE_API_KEYS_FILE``): which user a request speaks for, checked before any door reads it.

The file has one ``KEY USER_ID`` per line; blank lines and lines starting with ``#`` are ignored. It is read
again when it changes (checked at most once a second), so keys can be added or revoked without a restart; a
file that no longer reads keeps the keys it had and says so in the log. Keys are kept only as SHA-256 digests
and a presented key is compared with every one of them in constant time; no key is ever logged.
"""

import hashlib
import hmac
import logging
import os
import time
from pathlib import Path

from app.api.errors import add_headers, route_path
from app.core.errors import Unauthenticated
from app.core.names import name_problem

log = logging.getLogger(__name__)

MIN_KEY_LENGTH = 16
# what a request without a key may reach: the page and its files, probes, metrics and the API's description
_OPEN_PATHS = {"/", "/index.html", "/favicon.ico", "/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json"}
# DashScope's results are fetched as plain URLs (its own are presigned); a result's id is 128 random bits
_OPEN_PREFIXES = ("/web/", "/docs/", "/api/v1/services/audio/tts/results/")
# what a request without a key may ask, and get only what is not anybody's: Open WebUI lists voices and models
# without sending its key (its routers/audio.py), so these answer the built-ins to it and a key's user more
_DISCOVERY_PATHS = {"/v1/audio/voices", "/v1/audio/models"}
_KEY_HEADERS = (b"authorization", b"x-api-key")


class KeyFileError(ValueError):
    pass


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_key_file(path: Path) -> list[tuple[bytes, str]]:
    """(digest of the key, user id) per line; a line that is not ``KEY USER_ID`` names its number, not its text."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read it ({type(exc).__name__})") from None
    entries, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{path}, line {number}"
        if len(parts) != 2:
            raise KeyFileError(f"{where}: expected 'KEY USER_ID' (two words)")
        key, user = parts
        if len(key) < MIN_KEY_LENGTH:
            raise KeyFileError(f"{where}: the key is shorter than {MIN_KEY_LENGTH} characters")
        if problem := name_problem(user):
            raise KeyFileError(f"{where}: the user id {problem}")
        digest = _digest(key)
        if digest in seen:
            raise KeyFileError(f"{where}: the same key is listed twice")
        seen.add(digest)
        entries.append((digest, user))
    if not entries:
        raise KeyFileError(f"{path}: no keys (an empty key file would lock every client out)")
    return entries


class ApiKeys:
    def __init__(self, path: Path):
        self.path = path
        self._entries = read_key_file(path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def _file_stamp(self):
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._entries = read_key_file(self.path)
        except KeyFileError as exc:
            log.error("API keys not reloaded, the previous ones stay in use: %s", exc)
        else:
            log.info("API keys reloaded from %s: %d keys", self.path, len(self._entries))

    def user_of(self, key: str) -> str | None:
        """The user a key belongs to, or None; every stored key is compared, whichever matches."""
        self._refresh()
        presented, found = _digest(key), None
        for digest, user in self._entries:
            if hmac.compare_digest(digest, presented):
                found = user
        return found


def presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key from ``Authorization: Bearer <key>`` (what the openai and dashscope SDKs send) or ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return (x_api_key or "").strip()


def check_key(keys: ApiKeys, key: str) -> str:
    """The key's user, or Unauthenticated."""
    if not key:
        raise Unauthenticated(None, "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>")
    user = keys.user_of(key)
    if user is None:
        raise Unauthenticated(None, "the API key is not valid")
    return user


def is_open(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES))


class RequireApiKey:
    """ASGI middleware: a request (or WebSocket handshake) outside the open paths needs a valid key; its user
    goes to ``request.state.key_user`` for the doors. A refusal is a 401 in the door's own error shape (a
    WebSocket's is an HTTP answer to its handshake)."""

    def __init__(self, app, keys: ApiKeys, door_for, rejected):
        self.app = app
        self.keys = keys
        self.door_for = door_for
        self.rejected = rejected  # (reason) -> None, for the metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = route_path(scope)
        if is_open(scope.get("method", "GET"), path):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        authorization, x_api_key = (headers.get(name, b"").decode("latin-1") for name in _KEY_HEADERS)
        key = presented_key(authorization, x_api_key)
        if not key and scope.get("method") == "GET" and path in _DISCOVERY_PATHS:
            scope.setdefault("state", {})["anonymous"] = True
            return await self.app(scope, receive, send)
        try:
            user = check_key(self.keys, key)
        except Unauthenticated as exc:
            self.rejected("unauthenticated")
            response = self.door_for(path)(exc, {})
            add_headers(exc, response)
            if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
                return await send({"type": "websocket.close", "code": 1008, "reason": exc.problem})
            return await response(scope, receive, send)
        scope.setdefault("state", {})["key_user"] = user
        return await self.app(scope, receive, send)
