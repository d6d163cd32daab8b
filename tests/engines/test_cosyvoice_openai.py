"""The OpenAI door on the CosyVoice engine lanes (tiny random models), driven by the official `openai` SDK."""

import base64
import json

import openai
import pytest

from app.core.engine import Mode
from app.core.formats import FORMATS
from tests.support.audio import decode, decode_pcm, decoder_slack
from tests.support.server import last_engine_seconds, live_server
from tests.support.speech import EN_PROMPT


@pytest.fixture
def served(cv_settings):
    with live_server(cv_settings) as (url, app):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0, timeout=300), app


def test_every_format_with_a_builtin_speaker(served):
    sdk, app = served
    for name in FORMATS:
        response = sdk.audio.speech.create(model="tts-1", voice="onyx", input="Hello there.", response_format=name)
        got = decode_pcm(response.content, 24000) if name == "pcm" else decode(response.content)
        expected = last_engine_seconds(app) * got.rate
        allowed = decoder_slack(name, got.rate) + 0.002 * expected
        assert expected > 0 and abs(got.samples.size - expected) <= allowed, name


def test_cloned_voices_with_and_without_transcript(served, male_prompt, monkeypatch):
    sdk, app = served
    engine = app.state.speech.engine
    calls, original = [], engine._utterance

    def spy(request, *args, **kwargs):  # the mode each sentence is spoken in (upstream's inference_* inputs)
        calls.append(request.mode)
        return original(request, *args, **kwargs)

    monkeypatch.setattr(engine, "_utterance", spy)

    sample = ("prompt.wav", male_prompt, "audio/wav")
    sdk.audio.voices.create(name="told", audio_sample=sample, consent="c", extra_body={"script_hint": EN_PROMPT})
    sdk.audio.voices.create(name="untold", audio_sample=sample, consent="c")
    for voice_id, method in (("told", Mode.ZERO_SHOT), ("untold", Mode.CROSS_LINGUAL)):
        calls.clear()
        pcm = sdk.audio.speech.create(model="tts-1", voice={"id": voice_id}, input="Hello.", response_format="pcm")
        assert decode_pcm(pcm.content, 24000).seconds > 0 and set(calls) == {method}, (voice_id, calls)

    calls.clear()
    instructed = sdk.audio.speech.create(
        model="gpt-4o-mini-tts", voice="told", input="Hello.", instructions="Speak happily.", response_format="wav"
    )
    assert decode(instructed.content).seconds > 0 and set(calls) == {Mode.INSTRUCT}

    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="told", input="Hello. Again.", response_format="pcm", stream_format="sse"
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert events[-1]["type"] == "speech.audio.done" and abs(len(audio) / 48000 - last_engine_seconds(app)) < 0.01

    assert sdk.audio.voices.delete("untold").deleted
    with pytest.raises(openai.NotFoundError):
        sdk.audio.speech.create(model="tts-1", voice={"id": "untold"}, input="Hello.")


def test_engine_refusals_reach_the_sdk_as_its_error_classes(served):
    sdk, _ = served
    # CosyVoice's built-in SFT speakers carry no prompt, so its instructed mode cannot steer them
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="onyx", input="Hello.", instructions="Speak happily.")
    assert caught.value.body["param"] == "voice" and "built-in SFT speaker" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        sdk.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="onyx", input="Hello.", response_format="ogg")
    assert caught.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="onyx", input="Hello. " * 600)
    assert caught.value.body["param"] == "input"
    # the tiny models have 中文女 and 英文男: OpenAI's "alloy" maps to 英文女, which is not there
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    assert caught.value.body["message"] == "voice: 'alloy' stands for '英文女', which this server does not have"
