"""The one pattern every name must match before it reaches a path or a storage key."""

import re

from app.errors import InvalidInput

MAX_NAME_LENGTH = 64
MAX_NAME_BYTES = 128  # file names hold 255 bytes: room for a name, its suffix and a temp-file wrapper
# Letters of any script (voices are often named in Chinese), digits, "_", "-", "."; no separators,
# no leading dot, no "..": a valid name is always a single, harmless path component.
_NAME = re.compile(r"\w[\w.-]*")


def check_name(field: str, value: str) -> str:
    if not value:
        raise InvalidInput(f"{field}: must not be empty")
    if len(value) > MAX_NAME_LENGTH or len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidInput(f"{field}: longer than {MAX_NAME_LENGTH} characters ({MAX_NAME_BYTES} bytes in UTF-8)")
    if not _NAME.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"{field}: {value!r} is not a valid name (use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit; no path separators or '..')"
        )
    return value
