"""What the tests speak: the prompts' transcripts, texts short and long, and the embedded engine's own speech."""

import numpy as np

from app.core.engine import Mode, SynthesisRequest

ENGINE_RATE = 24000  # what both engines make: CosyVoice2/3's rate, which the embedded engine resamples to
EN_PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
ZH_PROMPT = "今天天气很好，我们一起去公园散步，然后回家吃饭。"
# one sentence of a story as long as a test needs (a few hundred of them: tens of minutes of speech)
SENTENCE = "This sentence is one of many in a very long story that nobody will listen to the end of. "
# short, for the tiny random CosyVoice models, which speak about 80 ms per UTF-8 byte
ZH_TEXT = "你好，欢迎使用语音合成服务。"
# upstream's splitter merges sentences up to 80 units (Chinese characters, or tokens: here UTF-8 bytes)
TWO_SENTENCES = (
    "The weather is lovely today, so we will walk to the park after lunch. "
    "Tomorrow we must get up early for work, so we will go to bed early tonight."
)


def spoken(engine, text: str, speaker: str = "英文男", speed: float = 1.0) -> np.ndarray:
    """The embedded engine's speech for ``text`` with a built-in speaker, in one array."""
    request = SynthesisRequest(Mode.SFT, text, speaker=speaker, speed=speed)
    return np.concatenate(list(engine.synthesize(request)))
