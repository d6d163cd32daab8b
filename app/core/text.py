"""Text helpers shared by the core and the engines."""

import re

from app.core.errors import Invalid

_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])|(?<=[.…])(?=\s)")
_CLAUSE_END = re.compile(r"(?<=[，,、：:])")
_MAX_SENTENCE_CHARS = 200


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab and line ends, and DEL


def speakable_text(text: str) -> str:
    """Text every engine and protocol can carry: control characters become spaces (a NUL would end the text for an
    engine in C), and a lone surrogate (JSON's "\\ud800"), which no UTF-8 can hold, is refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("text", "contains an invalid character (an unpaired surrogate)") from None
    return _CONTROL.sub(" ", text)


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


class SentenceBuffer:
    """Text that arrives in pieces (an LLM's tokens): the sentences it completes, as soon as they are complete."""

    def __init__(self) -> None:
        self._text = ""

    def add(self, text: str) -> list[str]:
        parts = _SENTENCE_END.split(self._text + text)
        self._text = parts.pop()  # not finished yet ("" when the text ended with a sentence)
        if len(self._text) > _MAX_SENTENCE_CHARS:  # no end in sight: speak up to its last clause end
            cut = max((m.start() for m in _CLAUSE_END.finditer(self._text)), default=0) or len(self._text)
            parts.append(self._text[:cut])
            self._text = self._text[cut:]
        return [sentence for part in parts for sentence in split_sentences(part)]

    def rest(self) -> list[str]:
        """What is left, complete or not (a flush, or the end of the text)."""
        text, self._text = self._text, ""
        return split_sentences(text)
