"""The OpenAI door, driven by the official `openai` SDK against a real server (embedded engine)."""

import base64
import json

import httpx
import openai
import pytest

from app.core.formats import FORMATS
from tests.support.audio import decode, decode_pcm, decoder_slack
from tests.support.server import last_engine_seconds, last_record, live_server, long_settings
from tests.support.speech import EN_PROMPT, SENTENCE

TEXT = "Hello from the OpenAI door. This is the second sentence."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(long_settings(tmp_path_factory.mktemp("openai"))) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="not-checked", max_retries=0)


def _audio(name: str, data: bytes):
    return decode_pcm(data, 24000) if name == "pcm" else decode(data)


@pytest.mark.parametrize("name", list(FORMATS))
def test_speech_in_every_format(sdk, server, name):
    response = sdk.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=name)
    got = _audio(name, response.content)
    assert got.rate == (48000 if name == "opus" else 24000)  # OpenAI's rate (Ogg Opus decodes at 48 kHz)
    expected = last_engine_seconds(server[1]) * got.rate
    assert abs(got.samples.size - expected) <= decoder_slack(name, got.rate) + 0.002 * expected
    assert got.seconds > 1.0 and got.rms > 0.01
    assert response.response.headers["content-type"] == FORMATS[name].media_type


def test_models_list_names_the_engine_and_openais_models(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert ids[0] == "espeak" and {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(ids)
    assert sdk.audio.speech.create(model="espeak", voice="nova", input="Fine.").content


def test_streaming_response_arrives_before_synthesis_ends(sdk, server):
    synth = server[1].state.speech.synthesizer
    if synth.stats.started:
        last_record(server[1])  # an earlier test's stream is recorded just after its last byte: wait for it
    before = synth.stats.completed
    with sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="onyx", input=SENTENCE * 30, response_format="pcm"
    ) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first and synth.active == 1 and synth.stats.completed == before
        data = first + b"".join(chunks)
    assert abs(decode_pcm(data, 24000).seconds - last_engine_seconds(server[1])) < 0.01


def test_sse_events_carry_the_audio_and_usage(sdk, server):
    with sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input=TEXT, response_format="pcm", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) > 2
    audio = decode_pcm(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), 24000)
    assert abs(audio.seconds - last_engine_seconds(server[1])) < 0.01
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == len(TEXT) and usage["output_tokens"] == round(audio.seconds * 25)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_speed_beyond_the_engines_range_is_time_stretched(sdk):
    def seconds(speed: float) -> float:
        pcm = sdk.audio.speech.create(model="tts-1", voice="echo", input=TEXT, response_format="pcm", speed=speed)
        return decode_pcm(pcm.content, 24000).seconds

    normal, quick, slow = seconds(1.0), seconds(4.0), seconds(0.25)
    assert 3.2 < normal / quick < 4.8, (normal, quick)
    assert 3.2 < slow / normal < 4.8, (normal, slow)


def test_instructions_steer_the_voice(sdk):
    def seconds(**extra) -> float:
        pcm = sdk.audio.speech.create(model="gpt-4o-mini-tts", voice="ash", input=TEXT, response_format="pcm", **extra)
        return decode_pcm(pcm.content, 24000).seconds

    assert seconds(instructions="Speak slowly.") > 1.2 * seconds()


def test_sample_rate_extension(sdk):
    response = sdk.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="flac", extra_body={"sample_rate": 8000}
    )
    assert decode(response.content).rate == 8000
    with pytest.raises(openai.BadRequestError) as error:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, extra_body={"sample_rate": 11025})
    assert error.value.body["param"] == "sample_rate"


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("extra", "kind", "param"),
    [
        ({"voice": "nobody"}, openai.NotFoundError, "voice"),
        ({"voice": "../etc"}, openai.BadRequestError, "voice"),
        ({"response_format": "ogg"}, openai.BadRequestError, "response_format"),
        ({"input": "x" * 4097}, openai.BadRequestError, "input"),
        ({"input": ""}, openai.BadRequestError, "input"),
        ({"input": "..."}, openai.BadRequestError, "input"),
        ({"speed": 4.5}, openai.BadRequestError, "speed"),
        ({"stream_format": "chunks"}, openai.BadRequestError, "stream_format"),
        ({"model": "whisper-1"}, openai.NotFoundError, "model"),
    ],
)
def test_bad_requests_raise_the_sdks_error_classes(sdk, extra, kind, param):
    request = {"model": "tts-1", "voice": "alloy", "input": TEXT, **extra}
    with pytest.raises(kind) as caught:
        sdk.audio.speech.create(**request)
    error = _error(caught.value)
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"], error


def test_custom_voices_are_the_seeds_voices(sdk, server, male_prompt, female_prompt):
    url = server[0]
    created = sdk.audio.voices.create(
        name="deep_reader",
        audio_sample=("me.wav", male_prompt, "audio/wav"),
        consent="cons_123",
        extra_body={"script_hint": EN_PROMPT},
    )
    assert (created.id, created.name, created.object, created.type) == (
        "deep_reader",
        "deep_reader",
        "audio.voice",
        "audio_sample",
    )
    assert created.created_at > 0
    # a voice without a transcript works too (cross-lingual cloning)
    sdk.audio.voices.create(name="high_reader", audio_sample=("her.wav", female_prompt, "audio/wav"), consent="c")
    listed = httpx.get(f"{url}/v1/audio/voices").json()
    assert listed["object"] == "list" and {v["id"] for v in listed["data"]} == {"deep_reader", "high_reader"}
    assert {"deep_reader", "high_reader"} <= set(httpx.get(f"{url}/get_available_spks").json()["cloned"])

    def pitch(voice) -> float:
        pcm = sdk.audio.speech.create(model="tts-1", voice=voice, input=TEXT, response_format="pcm").content
        return decode_pcm(pcm, 24000).median_f0()

    assert pitch({"id": "deep_reader"}) < 0.8 * pitch("high_reader")
    seed = httpx.post(f"{url}/tts", json={"tts_text": "The seed door.", "spk_id": "deep_reader"})
    assert decode(seed.content).seconds > 0.5

    with pytest.raises(openai.ConflictError):
        sdk.audio.voices.create(name="deep_reader", audio_sample=("me.wav", male_prompt, "audio/wav"), consent="c")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.voices.create(name="my voice", audio_sample=("me.wav", male_prompt, "audio/wav"), consent="c")
    assert _error(caught.value)["param"] == "name"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.voices.create(name="noise", audio_sample=("x.wav", b"not audio", "audio/wav"), consent="c")
    assert _error(caught.value)["param"] == "audio_sample"

    for voice_id in ("deep_reader", "high_reader"):
        deleted = sdk.audio.voices.delete(voice_id)
        assert (deleted.id, deleted.object, deleted.deleted) == (voice_id, "audio.voice.deleted", True)
    with pytest.raises(openai.NotFoundError):
        sdk.audio.voices.delete("deep_reader")
    assert httpx.get(f"{url}/v1/audio/voices").json()["data"] == []


def test_unknown_paths_and_methods_answer_in_openais_shape(server):
    url = server[0]
    missing = httpx.get(f"{url}/v1/audio/nothing")
    assert missing.status_code == 404 and _error_body(missing)["code"] == "not_found"
    wrong = httpx.get(f"{url}/v1/audio/speech")
    assert wrong.status_code == 405 and _error_body(wrong)["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


def _error_body(response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]
