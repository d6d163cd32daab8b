"""Upstream's runtime HTTP and gRPC APIs on the CosyVoice engine lanes (tiny random models), driven by upstream's
kind of clients: `requests` with GET and a multipart body, and a grpcio client built from upstream's proto."""

import asyncio
import time

import numpy as np
import pytest
import requests
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tests.support.ports import free_port
from tests.support.server import last_engine_seconds, live_server
from tests.support.speech import EN_PROMPT
from tests.support.upstream_grpc import OUR_PROTO, call, generate_stubs, raw_prompt, upstream_proto


@pytest.fixture
def served(cv_settings):
    port = free_port()
    with live_server(cv_settings.model_copy(update={"grpc_port": port, "wyoming_port": free_port()})) as (url, app):
        yield url, port, app


@pytest.mark.parametrize(
    ("kind", "fields", "prompted"),
    [
        ("sft", {"spk_id": "中文女"}, False),
        ("zero_shot", {"prompt_text": EN_PROMPT}, True),
        ("cross_lingual", {}, True),
        ("instruct2", {"instruct_text": "Speak slowly."}, True),
    ],
)
def test_runtime_http_streams_the_engines_pcm(served, male_prompt, kind, fields, prompted):
    url, _port, app = served
    files = {"prompt_wav": ("prompt.wav", male_prompt)} if prompted else None
    response = requests.request(
        "GET", f"{url}/inference_{kind}", data={"tts_text": "Hello there.", **fields}, files=files, timeout=300
    )
    assert response.status_code == 200, response.text
    samples = np.frombuffer(response.content, "<i2")
    rate = app.state.speech.engine.sample_rate
    assert samples.size > 0 and samples.size == round(last_engine_seconds(app) * rate)


def test_grpc_with_upstreams_stubs(served, male_prompt, tmp_path):
    _url, port, app = served
    stubs = generate_stubs(upstream_proto() or OUR_PROTO, tmp_path)
    calls = [
        {"kind": "sft_request", "fields": {"spk_id": "中文女", "tts_text": "Hello there."}},
        {
            "kind": "zero_shot_request",
            "fields": {"tts_text": "Hello there.", "prompt_text": EN_PROMPT},
            "prompt_file": str(raw_prompt(male_prompt, tmp_path)),
        },
        {"kind": "sft_request", "fields": {"spk_id": "nobody", "tts_text": "Hello."}},
    ]
    sft, zero_shot, unknown = call(stubs, port, calls)
    rate = app.state.speech.engine.sample_rate
    assert len(sft["audio"]) > 0 and len(zero_shot["audio"]) > 0
    assert len(zero_shot["audio"]) // 2 == round(last_engine_seconds(app) * rate)
    assert unknown["code"] == "NOT_FOUND" and unknown["details"].startswith("spk_id: no voice named 'nobody'")


def _descriptor(proto, out) -> descriptor_pb2.FileDescriptorProto:
    target = out / f"{proto.parent.name}.pb"
    assert protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={target}", str(proto)]) == 0
    (described,) = descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes()).file
    described.ClearField("name")
    return described


@pytest.mark.upstream_lane
def test_our_proto_is_upstreams_contract(lane_source, tmp_path):
    upstream = upstream_proto()
    assert upstream is not None, f"no cosyvoice.proto beside {lane_source}"
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    assert _descriptor(OUR_PROTO, tmp_path / "ours") == _descriptor(upstream, tmp_path / "theirs")


def test_dashscope_sdk_streams_sentence_by_sentence(served, monkeypatch):
    import dashscope
    from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer

    from tests.support.dashscope import Recorder

    monkeypatch.setattr(dashscope, "api_key", "not-checked")  # the SDK refuses to start without one
    url, _port, app = served
    recorder = Recorder()
    synthesizer = SpeechSynthesizer(
        model="cosyvoice-v2",
        voice="longxiaochun_v2",
        format=AudioFormat.PCM_24000HZ_MONO_16BIT,
        callback=recorder,
        url=url.replace("http://", "ws://") + "/api-ws/v1/inference",
    )
    synthesizer.streaming_call("Hello there. How")
    synthesizer.streaming_call(" are you?")
    synthesizer.streaming_complete()
    assert recorder.error is None, recorder.error
    texts = [e["payload"]["output"].get("original_text") for e in recorder.events]
    assert [t for t in texts if t][::2] == ["Hello there.", "How are you?"]  # each in sentence-begin and -end
    synth = app.state.speech.synthesizer
    deadline = time.monotonic() + 10
    while synth.stats.completed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert synth.stats.completed == 2
    assert abs(len(recorder.audio) // 2 - synth.stats.audio_seconds * 24000) <= 2


def test_dashscope_enrollment_and_http_synthesis(served, male_prompt, monkeypatch):
    import base64

    import dashscope
    from dashscope.audio.tts_v2 import VoiceEnrollmentService

    url, _port, app = served
    monkeypatch.setattr(dashscope, "base_http_api_url", f"{url}/api/v1")
    sample = "data:audio/wav;base64," + base64.b64encode(male_prompt).decode()
    service = VoiceEnrollmentService(api_key="not-checked")
    voice_id = service.create_voice(target_model="cosyvoice-v2", prefix="lane", url=sample, prompt_text=EN_PROMPT)
    assert [v["voice_id"] for v in service.list_voices(prefix="lane")] == [voice_id]
    result = dashscope.HttpSpeechSynthesizer.call(
        model="cosyvoice-v2",
        text="Hello there.",
        voice=voice_id,
        audio_format="pcm",
        sample_rate=24000,
        api_key="not-checked",
    )
    assert result.status_code == 200, result.message
    audio = requests.get(result.audio_url, timeout=60).content
    assert len(audio) // 2 == round(last_engine_seconds(app) * 24000) and len(audio) > 0
    service.delete_voice(voice_id)
    assert service.list_voices(prefix="lane") == []


def test_wyoming_lists_the_models_languages_and_streams_its_audio(served, lane):
    from wyoming.audio import AudioChunk
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info
    from wyoming.tts import SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

    from app.engines.cosyvoice.engine import LANGUAGES

    _url, _port, app = served
    wyoming_port = app.state.settings.wyoming_port

    async def home_assistant():
        async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await client.read_event())
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="中文女")).event())
            await client.write_event(SynthesizeChunk(text="Hello there. How are").event())
            await client.write_event(SynthesizeChunk(text=" you?").event())
            await client.write_event(SynthesizeStop().event())
            audio = b""
            while not SynthesizeStopped.is_type((event := await client.read_event()).type):
                if AudioChunk.is_type(event.type):
                    audio += AudioChunk.from_event(event).audio
            return info, audio

    info, audio = asyncio.run(asyncio.wait_for(home_assistant(), 300))
    voices = {voice.name: voice.languages for voice in info.tts[0].voices}
    assert voices["中文女"] == list(LANGUAGES[lane.generation])
    synth = app.state.speech.synthesizer
    deadline = time.monotonic() + 10
    while synth.stats.completed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert synth.stats.completed == 2 and len(audio) > 0  # two sentences
    assert abs(len(audio) // 2 - synth.stats.audio_seconds * 24000) <= 2
