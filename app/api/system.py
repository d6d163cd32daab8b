"""Operational endpoints."""

import asyncio

from fastapi import APIRouter, Request

from app.api.deps import Speech

router = APIRouter(tags=["system"])


@router.get("/health")
async def health(speech: Speech, request: Request) -> dict:
    status = await asyncio.to_thread(speech.status)  # reads the voice table when it changed on disk
    return {**status, "engine_reason": request.app.state.engine_reason}
