"""The web page's door: the page itself at `/`, its static files, and its own small API (stub)."""

from fastapi import APIRouter, FastAPI

router = APIRouter(tags=["web page"])


def install(app: FastAPI) -> None:
    app.include_router(router)
