"""Text helpers shared by the engines."""

import re

_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])|(?<=[.…])(?=\s)")
_CLAUSE_END = re.compile(r"(?<=[，,、：:])")
_MAX_SENTENCE_CHARS = 200


def split_sentences(text: str) -> list[str]:
    """Sentences (long ones cut at commas) so the first audio is ready after the first sentence."""
    out = []
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > _MAX_SENTENCE_CHARS:
            cut = max((m.start() for m in _CLAUSE_END.finditer(sentence, 0, _MAX_SENTENCE_CHARS)), default=0)
            cut = cut or _MAX_SENTENCE_CHARS
            out.append(sentence[:cut])
            sentence = sentence[cut:]
        out.append(sentence)
    return [s.strip() for s in out if s.strip()]
