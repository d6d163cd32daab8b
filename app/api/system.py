"""Operational endpoints."""

from fastapi import APIRouter, Request

from app.api.deps import Speech

router = APIRouter(tags=["system"])


@router.get("/health")
async def health(speech: Speech, request: Request) -> dict:
    status = speech.status()  # liveness: from memory, no thread and no disk (/ready reads the voice table)
    return {**status, "engine_reason": request.app.state.engine_reason}
