"""Operational endpoints."""

import asyncio

from fastapi import APIRouter, Request

from app.deps import Speech

router = APIRouter(tags=["system"])


@router.get("/health")
async def health(speech: Speech, request: Request) -> dict:
    synth = speech.synthesizer
    cloned = await asyncio.to_thread(speech.voices.cloned_ids)
    problem = speech.voices.problem
    return {
        "status": "degraded" if problem else "ok",
        "problem": problem,
        "engine": speech.engine.name,
        "engine_model": speech.engine.description,
        "engine_reason": request.app.state.engine_reason,
        "sample_rate": speech.engine.sample_rate,
        "storage": speech.user_voices.storage.name,
        "voices": len(speech.voices.builtin_ids()) + len(cloned),
        "builtin_voices": len(speech.voices.builtin_ids()),
        "cloned_voices": len(cloned),
        "active_syntheses": synth.active,
        "max_concurrency": synth.max_concurrency,
    }
