"""What every door's routes depend on: the core's SpeechService, and the user an API key speaks for."""

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from app.config import Settings
from app.core.errors import Forbidden
from app.core.fetch import FetchPolicy
from app.core.names import VoiceName
from app.core.speech import SpeechService


def get_speech(request: Request) -> SpeechService:
    return request.app.state.speech


Speech = Annotated[SpeechService, Depends(get_speech)]


def settings_of(connection: HTTPConnection) -> Settings:
    """The settings, for what is a door's own to decide (its voice names, its limits); the core has its values."""
    return connection.app.state.settings


Config = Annotated[Settings, Depends(settings_of)]


def fetch_policy(connection: HTTPConnection) -> FetchPolicy:
    """Which URLs a request may make the server fetch, built once at start-up."""
    return connection.app.state.fetch_policy


def caller_user(connection: HTTPConnection) -> str:
    """The user the request's API key belongs to; "" when the server runs without keys."""
    return getattr(connection.state, "key_user", "")


def anonymous(connection: HTTPConnection) -> bool:
    """A discovery call without a key on a server that uses API keys: it may see only what is nobody's."""
    return getattr(connection.state, "anonymous", False)


def user_for(connection: HTTPConnection, sent: str) -> str:
    """The user a request acts for: with a key, the key's user (a request naming another user is refused);
    without keys, the user the request names ("" for the shared library)."""
    sent, key_user = sent.strip(), caller_user(connection)
    if key_user and sent and sent != key_user:
        raise Forbidden("user", f"{sent!r} is not the user this API key belongs to; leave it out or send {key_user!r}")
    return key_user or sent


def voice_owner(connection: HTTPConnection, sent: str = "") -> VoiceName | None:
    """``user_for`` as the name of the voices' owner: None for the shared library."""
    user = user_for(connection, sent)
    return VoiceName.check("user", user) if user else None
