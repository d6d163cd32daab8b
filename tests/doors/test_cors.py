"""Browser front-ends on other origins (COSYVOICE_CORS_ORIGINS, Starlette's CORSMiddleware): preflights on every
HTTP door, errors readable by the page, and a real Chromium page on another origin that plays /tts as it streams."""

import secrets

import pytest

from app.config import Settings
from tests.support.audio import decode
from tests.support.browser import other_name, page_origin
from tests.support.server import live_server, running

PAGE_ORIGIN = "http://localhost:5173"  # a front-end's dev server beside this one
KEY = "sk-page-" + secrets.token_hex(12)
# (method, path) of each HTTP door: seed, OpenAI, DashScope HTTP and enrollment, upstream's runtime, the page's API
DOORS = [
    ("POST", "/tts"),
    ("POST", "/tts/pcm"),
    ("POST", "/clone"),
    ("POST", "/generate_audio"),
    ("DELETE", "/voices/somebody"),
    ("POST", "/v1/audio/speech"),
    ("DELETE", "/v1/audio/voices/somebody"),
    ("POST", "/api/v1/services/audio/tts/SpeechSynthesizer"),
    ("POST", "/api/v1/services/audio/tts/customization"),
    ("POST", "/inference_sft"),
    ("POST", "/web/speak"),
]


def _settings(tmp_path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", **overrides)


def _preflight(client, method: str, path: str, origin: str = PAGE_ORIGIN, headers: str = "content-type"):
    return client.options(
        path,
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


@pytest.mark.parametrize(("method", "path"), DOORS)
def test_every_http_door_answers_a_preflight_from_a_local_page_by_default(tmp_path, method, path):
    with running(_settings(tmp_path)) as client:
        answer = _preflight(client, method, path, headers="authorization, x-api-key, content-type")
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == PAGE_ORIGIN
    assert method in answer.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in answer.headers  # keys travel in headers, never cookies


def test_a_page_from_elsewhere_is_not_allowed_by_default(tmp_path):
    with running(_settings(tmp_path)) as client:
        refused = _preflight(client, "POST", "/tts", origin="https://evil.example")
        spoken = client.post(
            "/tts", json={"tts_text": "Hello.", "spk_id": "英文男"}, headers={"Origin": "https://evil.example"}
        )
        local = client.post("/tts", json={"tts_text": "Hello.", "spk_id": "英文男"}, headers={"Origin": PAGE_ORIGIN})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    # the server answers (it cannot tell a browser from curl), but the browser keeps the answer from the page
    assert spoken.status_code == 200 and "access-control-allow-origin" not in spoken.headers
    assert local.headers["access-control-allow-origin"] == PAGE_ORIGIN
    assert "X-Sample-Rate" in local.headers["access-control-expose-headers"]


def test_the_origins_setting(tmp_path):
    with running(_settings(tmp_path, cors_origins="https://chat.example.com, http://tv.lan:*")) as client:
        exact = _preflight(client, "POST", "/tts", origin="https://chat.example.com")
        other_port = _preflight(client, "POST", "/tts", origin="https://chat.example.com:8443")
        any_port = _preflight(client, "POST", "/tts", origin="http://tv.lan:8123")
        no_port = _preflight(client, "POST", "/tts", origin="http://tv.lan")
        local = _preflight(client, "POST", "/tts")  # naming origins replaces the local default
    assert exact.status_code == 200 and exact.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert other_port.status_code == 400
    assert any_port.status_code == 200 and no_port.status_code == 200
    assert local.status_code == 400
    with running(_settings(tmp_path, cors_origins="*")) as client:
        anywhere = client.post(
            "/tts", json={"tts_text": "Hi.", "spk_id": "英文男"}, headers={"Origin": "https://x.org"}
        )
    assert anywhere.headers["access-control-allow-origin"] == "*"
    with running(_settings(tmp_path, cors_origins="")) as client:
        assert _preflight(client, "POST", "/tts").status_code == 405  # no cross-origin calls at all
    for wrong in ("localhost:3000", "https://*.example.com", "http://a.org/page"):
        with pytest.raises(ValueError, match="is not an origin"):
            _settings(tmp_path, cors_origins=wrong)
    assert _settings(tmp_path, cors_origins="HTTP://Tv.Lan:*").cors_origins == ["http://tv.lan:*"]


def test_with_api_keys_a_preflight_needs_no_key_and_a_refusal_is_readable(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY} page\n")
    with running(_settings(tmp_path, api_keys_file=keys)) as client:
        preflight = _preflight(client, "POST", "/v1/audio/speech", headers="authorization, content-type")
        body = {"model": "tts-1", "input": "Hello.", "voice": "alloy"}
        refused = client.post("/v1/audio/speech", json=body, headers={"Origin": PAGE_ORIGIN})
        spoken = client.post("/v1/audio/speech", json=body, headers={"Origin": PAGE_ORIGIN, "X-API-Key": KEY})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == PAGE_ORIGIN
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == PAGE_ORIGIN
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert spoken.status_code == 200 and spoken.headers["access-control-allow-origin"] == PAGE_ORIGIN
    assert decode(spoken.content).seconds > 0.3


# -- a real page on another origin --------------------------------------------------------------------------

# The page a front-end would be: fetch /tts, hand each piece of the MP3 stream to a MediaSource as it arrives,
# and play it. It reports what it saw on window.result.
FRONT_END = """<!doctype html><html><body><audio id="player"></audio><script>
window.result = {pieces: 0, bytes: 0, played: 0, done: false, error: null, status: null, rate: null};
async function speak(server, key) {
  const headers = {"Content-Type": "application/json"};
  if (key) headers["Authorization"] = "Bearer " + key;
  try {
    const pcm = await fetch(server + "/tts/pcm", {method: "POST", headers,
      body: JSON.stringify({tts_text: "Hi.", spk_id: "英文女"})});
    window.result.rate = pcm.headers.get("X-Sample-Rate");
    await pcm.arrayBuffer();
    const response = await fetch(server + "/tts", {method: "POST", headers,
      body: JSON.stringify({tts_text: TEXT, spk_id: "英文女"})});
    window.result.status = response.status;
    if (!response.ok) { window.result.error = (await response.json()).error; window.result.done = true; return; }
    const audio = document.getElementById("player");
    const source = new MediaSource();
    audio.src = URL.createObjectURL(source);
    await new Promise(resolve => source.addEventListener("sourceopen", resolve, {once: true}));
    const buffer = source.addSourceBuffer("audio/mpeg");
    const reader = response.body.getReader();
    let playing = false;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      window.result.pieces += 1; window.result.bytes += value.length;
      buffer.appendBuffer(value);
      await new Promise(resolve => buffer.addEventListener("updateend", resolve, {once: true}));
      // not awaited: play() resolves once enough is buffered, which needs the pieces still to come
      if (!playing) { playing = true; audio.play().catch(e => { window.result.error = String(e); }); }
    }
    source.endOfStream();
    await new Promise(resolve => { audio.onended = resolve; });
    window.result.played = audio.currentTime;
  } catch (error) {
    window.result.error = String(error);
  }
  window.result.done = true;
}
const TEXT = "This page is on another origin. It plays the answer while it streams. Each sentence comes in turn.";
</script></body></html>"""


@pytest.fixture(scope="module")
def front_end():
    with page_origin(FRONT_END) as url:
        yield url


def _run_page(browser, page_url: str, server_url: str, key: str = "") -> dict:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(page_url + "/")
        page.evaluate("([server, key]) => { speak(server, key); }", [other_name(server_url), key])
        page.wait_for_function("window.result.done", timeout=60_000)
        return page.evaluate("window.result")
    finally:
        context.close()


def test_a_page_on_another_origin_plays_tts_as_it_streams(tmp_path, browser, front_end):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY} page\n")
    with live_server(_settings(tmp_path, api_keys_file=keys)) as (url, _app):
        played = _run_page(browser, front_end, url, KEY)
        refused = _run_page(browser, front_end, url, "sk-wrong-" + "0" * 16)
    assert played["error"] is None, played
    assert played["status"] == 200 and played["rate"] == "24000"  # an exposed header
    assert played["pieces"] > 1 and played["bytes"] > 10_000
    assert played["played"] > 3.0  # seconds of audio the element played to the end
    assert refused["status"] == 401 and refused["error"]["code"] == "unauthorized", refused  # the seed door's shape


def test_a_page_from_an_origin_not_allowed_cannot_read_the_answer(tmp_path, browser, front_end):
    with live_server(_settings(tmp_path, cors_origins="https://only.example")) as (url, _app):
        result = _run_page(browser, front_end, url)
    assert result["status"] is None and "Failed to fetch" in result["error"], result
