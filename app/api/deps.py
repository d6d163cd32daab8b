"""What every door's routes depend on: the core's SpeechService."""

from typing import Annotated

from fastapi import Depends, Request

from app.core.speech import SpeechService


def get_speech(request: Request) -> SpeechService:
    return request.app.state.speech


Speech = Annotated[SpeechService, Depends(get_speech)]
