"""Browser front-ends on other origins (``COSYVOICE_CORS_ORIGINS``): Starlette's CORSMiddleware answers their
preflights and marks every answer, errors included, as readable by the origins allowed.

The setting is a comma-separated list of origins. ``*`` allows any origin; an origin ending in ``:*`` allows it on
any port (``http://localhost:*``); an empty value allows none. The default allows pages served from this machine
(``localhost``, ``127.0.0.1``, ``[::1]``, any port), which is what a front-end running beside the server needs,
while a page from anywhere else on the web cannot call a server on the user's machine. No cookies are involved:
an API key travels in a header the page sets itself, so answers never allow credentials.
"""

import re

from starlette.middleware.cors import CORSMiddleware

# what a page may read besides the simple headers: how to play raw PCM, a download's name, when to retry
EXPOSED_HEADERS = [
    "Content-Disposition",
    "Retry-After",
    "X-Sample-Rate",
    "X-Channels",
    "X-Bit-Depth",
    "X-Sample-Format",
    "X-Audio-Format",
]


def origin_pattern(origins: list[str]) -> str | None:
    """One regular expression for the origins (None for none); ``:*`` stands for any port or none."""
    if not origins:
        return None
    parts = []
    for origin in origins:
        if origin.endswith(":*"):
            parts.append(re.escape(origin[:-2]) + r"(:\d{1,5})?")
        else:
            parts.append(re.escape(origin))
    return "|".join(parts)


def middleware_options(origins: list[str]) -> dict | None:
    """CORSMiddleware's options for the origins, or None when no origin is allowed."""
    if not origins:
        return None
    allowed = {"allow_origins": ["*"]} if "*" in origins else {"allow_origin_regex": origin_pattern(origins)}
    return {
        **allowed,
        "allow_methods": ["GET", "POST", "PUT", "DELETE"],
        "allow_headers": ["*"],  # echoes what the preflight asks for: Authorization, X-API-Key, an SDK's own
        "expose_headers": EXPOSED_HEADERS,
        "allow_credentials": False,
        "max_age": 600,
    }


def install(app, origins: list[str]) -> None:
    options = middleware_options(origins)
    if options is not None:
        app.add_middleware(CORSMiddleware, **options)
