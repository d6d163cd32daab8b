"""The one pattern every name must match before it reaches a path or a storage key: ``VoiceName``."""

import re

from app.core.errors import Invalid

MAX_NAME_LENGTH = 64
MAX_NAME_BYTES = 128  # file names hold 255 bytes: room for a name, its suffix and a temp-file wrapper
# Letters of any script (voices are often named in Chinese), digits, "_", "-", "."; no separators,
# no leading dot, no "..": a valid name is always a single, harmless path component.
_NAME = re.compile(r"\w[\w.-]*")


class VoiceName(str):
    """A name checked once (``VoiceName.check``): safe as a file name and as a storage key part."""

    __slots__ = ()

    @classmethod
    def check(cls, param: str, value: str) -> "VoiceName":
        if isinstance(value, VoiceName):
            return value
        problem = name_problem(value)
        if problem:
            raise Invalid(param, problem)
        return cls(value)


def name_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_NAME_LENGTH or len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_LENGTH} characters ({MAX_NAME_BYTES} bytes in UTF-8)"
    if not _NAME.fullmatch(value) or ".." in value:
        return (
            f"{value!r} is not a valid name (use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit; no path separators or '..')"
        )
    return None
