"""The clients self-hosters point at a local TTS server: LiveKit Agents' openai.TTS itself, and, where the client
cannot run here (a web app, a Node.js server, a package whose pins clash with the engine's), its exact requests
replicated from its source: Open WebUI's discovery and speech calls, SillyTavern's two TTS providers (its
CosyVoice provider in a real Chromium page, across origins), Pipecat's OpenAITTSService."""

import asyncio
import concurrent.futures
import secrets

import numpy as np
import openai
import pytest
import requests

from app.config import Settings
from tests.support.audio import decode, decode_pcm
from tests.support.browser import other_name, page_origin
from tests.support.server import live_server

KEY = "sk-webui-" + secrets.token_hex(12)


def run_async(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API keeps an event loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result(timeout=120)


def _settings(tmp_path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", **overrides)


@pytest.fixture
def keyed(tmp_path, male_prompt):
    """A server with API keys and a voice cloned by the key's user: (base URL, app)."""
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY} webui\n")
    with live_server(_settings(tmp_path, api_keys_file=keys)) as (url, app):
        files = {"prompt_audio": ("p.wav", male_prompt)}
        cloned = requests.post(
            f"{url}/clone", data={"spk_id": "my_reader", "prompt_text": "x"}, files=files, headers={"X-API-Key": KEY}
        )
        assert cloned.status_code == 200, cloned.text
        yield url, app


# -- Open WebUI: backend/open_webui/routers/audio.py -------------------------------------------------------


def open_webui_voices(base_url: str) -> dict[str, str]:
    """`get_available_voices` for the OpenAI engine, as it is: no headers, `voices` read, defaults on failure."""
    try:
        response = requests.get(f"{base_url}/audio/voices")
        response.raise_for_status()
        voices_list = response.json().get("voices", [])
        return {voice["id"]: voice["name"] for voice in voices_list}
    except Exception:  # noqa: BLE001 - Open WebUI's own fallback
        return {name: name for name in ("alloy", "echo", "fable", "onyx", "nova", "shimmer")}


def open_webui_models(base_url: str) -> list[dict]:
    """`get_available_models` for the OpenAI engine: no headers, `models` read."""
    try:
        response = requests.get(f"{base_url}/audio/models")
        response.raise_for_status()
        return response.json().get("models", [])
    except Exception:  # noqa: BLE001
        return [{"id": "tts-1"}, {"id": "tts-1-hd"}]


def open_webui_speech(base_url: str, key: str, voice: str, text: str) -> requests.Response:
    """Its speech call: the browser's {input, voice}, the configured model, the configured key as a Bearer."""
    payload = {"input": text, "voice": voice, "model": "tts-1"}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return requests.post(f"{base_url}/audio/speech", json=payload, headers=headers, timeout=60)


def test_open_webui_lists_voices_and_models_without_a_key_and_speaks_with_one(keyed):
    url, app = keyed
    base = f"{url}/v1"
    voices = open_webui_voices(base)
    builtins = app.state.speech.voices.builtin_ids()
    # what a keyless caller sees: OpenAI's names for the built-ins, and the built-ins; never a user's voice
    assert set(voices) == {*builtins, *app.state.settings.openai_voices}
    assert voices["alloy"] == "alloy (英文女)" and voices["中文女"] == "中文女"
    assert "my_reader" not in voices
    assert [model["id"] for model in open_webui_models(base)] == ["espeak", "tts-1", "tts-1-hd", *_GPT_MODELS]
    # with its key (the OpenAI SDK's listing, or any caller that sends one): the user's voice too, in both shapes
    listed = requests.get(f"{base}/audio/voices", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert [voice["id"] for voice in listed["data"]] == ["my_reader"] and listed["object"] == "list"
    assert {"id": "my_reader", "name": "my_reader"} in listed["voices"]
    wrong = requests.get(f"{base}/audio/voices", headers={"Authorization": "Bearer sk-wrong-0000000000000000"})
    assert wrong.status_code == 401  # a key that is sent is checked
    for voice in ("alloy", "my_reader"):
        answer = open_webui_speech(base, KEY, voice, "Hello from Open WebUI.")
        assert answer.status_code == 200 and answer.headers["content-type"] == "audio/mpeg"
        assert decode(answer.content).seconds > 0.5
    refused = open_webui_speech(base, "", "alloy", "Hello.")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


_GPT_MODELS = ["gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"]


def test_open_webui_without_keys_lists_the_shared_voices_too(tmp_path, male_prompt):
    with live_server(_settings(tmp_path)) as (url, _app):
        files = {"prompt_audio": ("p.wav", male_prompt)}
        requests.post(f"{url}/clone", data={"spk_id": "shared_reader", "prompt_text": "x"}, files=files)
        voices = open_webui_voices(f"{url}/v1")
    assert voices["shared_reader"] == "shared_reader" and voices["echo"] == "echo (英文男)"


# -- LibreChat: api/server/services/Files/Audio/TTSService.js (its Node.js server) ------------------------


def librechat_tts(url: str, authorization: str | None, voice: str, text: str) -> bytes:
    """`openAIProvider` + `ttsRequest`: the configured URL as it is, {input, model, voice}, no format (it labels
    what comes back audio/mpeg), and whatever its version makes of a missing apiKey as the Authorization."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = requests.post(url, json={"input": text, "model": "tts-1", "voice": voice}, headers=headers, stream=True)
    assert response.status_code == 200, response.text
    return b"".join(response.iter_content(4096))


def test_librechat_with_its_authorization_headers_and_long_text_in_pieces(tmp_path):
    sentence = "LibreChat reads long answers aloud in pieces of about a thousand characters. "
    text = sentence * 70  # over its 4096: split at sentence ends into pieces of at most 1000, one request each
    pieces, piece = [], ""
    for part in text.split(". "):
        if piece and len(piece) + len(part) + 2 > 1000:
            pieces.append(piece)
            piece = ""
        piece += part + ". "
    pieces.append(piece)
    with live_server(_settings(tmp_path)) as (url, _app):
        endpoint = f"{url}/v1/audio/speech"
        for authorization in ("undefined", "Bearer undefined", None):  # its versions' missing apiKey
            assert decode(librechat_tts(endpoint, authorization, "echo", "Hello.")).seconds > 0.3
        joined = b"".join(librechat_tts(endpoint, "Bearer x", "echo", piece.strip()) for piece in pieces)
        whole = [decode(librechat_tts(endpoint, None, "echo", piece.strip())).seconds for piece in pieces]
    assert len(pieces) > 4
    # the MP3s joined byte-wise, as LibreChat pipes them to the browser, play as one stream of all of them
    assert decode(joined).seconds == pytest.approx(sum(whole), abs=0.1 * len(pieces))


# -- SillyTavern's "OpenAI Compatible" provider: src/endpoints/openai.js (from its Node.js server) ----------


def sillytavern_openai_compatible(endpoint: str, key: str | None, voice: str, text: str) -> requests.Response:
    """/api/openai/custom/generate-voice: the configured full URL, `Bearer ${key ?? ''}`, and its defaults."""
    body = {"input": text, "response_format": "mp3", "voice": voice, "speed": 1, "model": "tts-1"}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key or ''}"}
    return requests.post(endpoint, json=body, headers=headers, timeout=60)


def test_sillytaverns_openai_compatible_provider(tmp_path):
    with live_server(_settings(tmp_path)) as (url, _app):
        answer = sillytavern_openai_compatible(f"{url}/v1/audio/speech", None, "nova", "Hello from the tavern.")
    assert answer.status_code == 200 and decode(answer.content).seconds > 0.5


# -- SillyTavern's "CosyVoice" provider: public/scripts/extensions/tts/cosyvoice.js, in the browser ---------

# its fetchTtsVoiceObjects and fetchTtsGeneration, then index.js's addAudioJob: a blob that must be audio/*,
# played by an <audio> element. SillyTavern serves its page from its own origin (port 8000 by default).
SILLYTAVERN_PAGE = """<!doctype html><html><body><audio id="player"></audio><script>
window.result = {done: false};
async function tavern(endpoint, streaming) {
  try {
    const response = await fetch(`${endpoint}/speakers`);
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.json()}`);
    const voices = await response.json();
    const voice = voices.find(v => v.name == "英文男");
    const params = {text: "Good evening, traveller. Sit by the fire.", speaker: voice.voice_id};
    if (streaming) params["streaming"] = 1;
    const answer = await fetch(`${endpoint}/`, {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify(params)});
    if (!answer.ok) throw new Error(await answer.text());
    const audioData = await answer.blob();
    if (!audioData.type.startsWith("audio/")) throw new Error(`Expecting audio/*, got ${audioData.type}`);
    const audio = document.getElementById("player");
    audio.src = URL.createObjectURL(audioData);
    await audio.play();
    await new Promise(resolve => { audio.onended = resolve; });
    window.result = {done: true, voices: voices.length, type: audioData.type, played: audio.currentTime};
  } catch (error) {
    window.result = {done: true, error: String(error)};
  }
}
</script></body></html>"""


@pytest.mark.parametrize("streaming", [False, True])
def test_sillytaverns_cosyvoice_provider_from_its_page(tmp_path, browser, streaming):
    with live_server(_settings(tmp_path)) as (url, app), page_origin(SILLYTAVERN_PAGE) as tavern_url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{tavern_url}/")
            page.evaluate("([endpoint, streaming]) => { tavern(endpoint, streaming); }", [other_name(url), streaming])
            page.wait_for_function("window.result.done", timeout=60_000)
            result = page.evaluate("window.result")
        finally:
            context.close()
        spoken = requests.post(
            f"{url}/", json={"text": "Good evening, traveller. Sit by the fire.", "speaker": "英文男"}
        )
    assert "error" not in result, result
    assert result["voices"] == len(app.state.speech.voices.builtin_ids()) and result["type"] == "audio/wav"
    assert result["played"] > 1.0
    wav = decode(spoken.content)
    assert wav.rate == 24000 and np.abs(wav.samples).max() > 0.05


# -- LiveKit Agents' openai.TTS (the real plugin) and Pipecat's OpenAITTSService (its request) --------------


def test_livekit_agents_openai_tts_with_pcm_and_sse(tmp_path):
    from livekit.plugins import openai as livekit_openai

    text = "Hello from a LiveKit agent. It speaks two sentences."

    async def frames(base_url: str, model: str) -> np.ndarray:
        # tts-1 asks for SSE events (its stream_format "sse"), gpt-4o-mini-tts for the audio bytes
        tts = livekit_openai.TTS(base_url=base_url, api_key="unused", model=model, voice="alloy", response_format="pcm")
        try:
            async with tts.synthesize(text) as stream:
                audio = [event.frame async for event in stream]
        finally:
            await tts.aclose()
        assert {frame.sample_rate for frame in audio} == {24000}
        return np.concatenate([np.frombuffer(frame.data, "<i2") for frame in audio])

    with live_server(_settings(tmp_path)) as (url, _app):
        sse, raw = (run_async(frames(f"{url}/v1", model)) for model in ("tts-1", "gpt-4o-mini-tts"))
        body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}
        direct = np.frombuffer(requests.post(f"{url}/v1/audio/speech", json=body).content, "<i2")
    for heard in (sse, raw):  # LiveKit ends its audio with up to 10 ms of silence
        assert direct.size <= heard.size <= direct.size + 240
        np.testing.assert_array_equal(heard[: direct.size], direct)
        assert not heard[direct.size :].any()


def test_pipecats_openai_tts_service_request(tmp_path):
    """pipecat-ai 1.14 cannot be installed beside the engine (it needs protobuf<7 and soxr 1.0): its
    pipecat/services/openai/tts.py `run_tts` is replicated: the openai SDK's streaming speech call with
    response_format "pcm", its default model, a voice from OpenAI's names only, read in chunks."""

    async def run_tts(base_url: str, voice: str, text: str) -> bytes:
        client = openai.AsyncOpenAI(api_key="unused", base_url=base_url)
        params = {"input": text, "model": "gpt-4o-mini-tts", "voice": voice, "response_format": "pcm", "speed": 1.2}
        async with client.audio.speech.with_streaming_response.create(**params) as response:
            assert response.status_code == 200
            return b"".join([chunk async for chunk in response.iter_bytes(48000)])

    with live_server(_settings(tmp_path, openai_voices={"onyx": "英文男"})) as (url, _app):
        pcm = run_async(run_tts(f"{url}/v1", "onyx", "Hello from a Pipecat pipeline."))
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    assert audio.size / 24000 > 0.8 and decode_pcm(pcm, 24000).median_f0() < 160  # onyx is the male voice here
