"""The web page at `/`: its own API over HTTP, and the page itself in a real browser (Debian's Chromium, headless).

The browser is conftest's (tests/support/browser.py). Screenshots go to .artifacts/.
"""

import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.config import Settings
from tests.support.audio import decode, decode_pcm, tone, wav
from tests.support.server import live_server
from tests.support.speech import EN_PROMPT

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"  # at the repo root
RATE = 24000
LONG_TEXT = " ".join(
    [
        "This sentence is the first of several, so that the answer takes a while to make.",
        "Here is the second one, which keeps the engine busy a little longer.",
        "And a third sentence arrives after the first audio has already started playing.",
        "The fourth sentence is about the weather, which is fine today.",
        "A fifth one talks about the river that runs past the old mill.",
        "The sixth sentence counts: one, two, three, four, five, six.",
        "Number seven is nearly the end of this little story.",
        "The eighth and last sentence closes the stream.",
    ]
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module (URL, app): the espeak engine, as conftest's ``settings``."""
    tmp = tmp_path_factory.mktemp("web")
    with live_server(Settings(data_dir=tmp / "data", model_dir=tmp / "no-model", engine="auto")) as served:
        yield served


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server[0], timeout=30) as client:
        yield client


def clone_voice(http, name: str, prompt: bytes) -> None:
    files = {"prompt_audio": ("prompt.wav", prompt, "audio/wav")}
    response = http.post("/clone", data={"spk_id": name, "prompt_text": EN_PROMPT}, files=files)
    assert response.status_code == 200, response.text


def message_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["message"]


# -- the page's files --------------------------------------------------------------------------------------


def test_the_page_and_its_modules_are_served(http):
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="web/app.js">' in page.text
    assert http.get("/index.html").text == page.text
    assert http.get("/web/index.html").status_code == 404  # only at / (with the page's security headers)
    modules, seen = ["app.js"], set()
    while modules:  # every module the page imports, found by following the imports
        name = modules.pop()
        seen.add(name)
        script = http.get(f"/web/{name}")
        assert script.status_code == 200, name
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.headers["cache-control"] == "no-cache"
        modules += [m for m in re.findall(r'from "\./([\w.-]+)"', script.text) if m not in seen]
    assert {"app.js", "api.js", "player.js", "clone.js"} <= seen
    css = http.get("/web/style.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    missing = http.get("/web/nothing.js")
    assert missing.status_code == 404 and message_of(missing)


# -- POST /web/speak ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("pcm", "audio/pcm"),
        ("mp3", "audio/mpeg"),
        ("wav", "audio/wav"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
    ],
)
def test_speak_streams_every_format(http, fmt, media_type):
    body = {"text": "Hello from the web page.", "voice": "英文女", "mode": "sft", "format": fmt}
    with http.stream("POST", "/web/speak", json=body) as response:
        assert response.status_code == 200, response.read()
        chunks = list(response.iter_bytes())
    assert response.headers["content-type"] == media_type
    assert response.headers["x-sample-rate"] == str(RATE)
    assert response.headers["content-disposition"] == f"inline; filename=speech.{fmt}"
    data = b"".join(chunks)
    audio = decode_pcm(data, RATE) if fmt == "pcm" else decode(data)
    assert audio.rate == (48000 if fmt == "opus" else RATE)  # Ogg Opus always decodes at 48 kHz
    assert 0.8 < audio.seconds < 5, audio.seconds
    assert audio.rms > 0.01


def test_speak_modes_with_a_cloned_voice(http, male_prompt):
    clone_voice(http, "web_modes", male_prompt)
    try:
        for mode, extra in [
            ("zero_shot", {}),
            ("cross_lingual", {}),
            ("3s极速复刻", {}),
            ("instruct", {"instruction": "speak slowly"}),
            ("自然语言控制", {"instruction": "用开心的语气说"}),
        ]:
            body = {"text": "One more sentence.", "voice": "web_modes", "mode": mode, "format": "wav", **extra}
            response = http.post("/web/speak", json=body)
            assert response.status_code == 200, (mode, response.text)
            assert decode(response.content).seconds > 0.5
        slow = http.post("/web/speak", json={"text": "One more sentence.", "voice": "web_modes", "speed": 0.5})
        fast = http.post("/web/speak", json={"text": "One more sentence.", "voice": "web_modes", "speed": 2})
        assert decode(slow.content).seconds > 1.6 * decode(fast.content).seconds
    finally:
        http.delete("/voices/web_modes")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"text": "", "voice": "英文女"}, 400, "text: must not be empty"),
        ({"text": "hello", "voice": "nobody_here"}, 404, "voice: no voice named 'nobody_here'"),
        ({"text": "hello", "voice": "英文女", "mode": "zero_shot"}, 422, "voice: '英文女' is a built-in speaker"),
        ({"text": "hello", "voice": "英文女", "mode": "instruct"}, 400, "instruction: 自然语言控制 needs"),
        ({"text": "hello", "voice": "英文女", "speed": 5}, 422, "speed: "),
        ({"text": "hello", "voice": "英文女", "format": "ogg"}, 422, "format: "),
        ({"text": "hello", "voice": "英文女", "mode": "sing"}, 422, "mode: unknown mode 'sing'"),
        ({"voice": "英文女"}, 422, "text: Field required"),
    ],
)
def test_speak_errors_name_the_page_fields(http, body, status, message):
    response = http.post("/web/speak", json=body)
    assert response.status_code == status, response.text
    assert message_of(response).startswith(message), message_of(response)


# -- POST /web/prompt_check --------------------------------------------------------------------------------


def check(http, audio: bytes, text: str = "") -> dict:
    files = {"prompt_audio": ("prompt.wav", audio, "audio/wav")}
    response = http.post("/web/prompt_check", files=files, data={"prompt_text": text})
    assert response.status_code == 200, response.text
    report = response.json()
    assert set(report) == {"seconds", "speech_seconds", "peak", "clipped_fraction", "problems", "ok"}
    assert report["ok"] is (not report["problems"])
    return report


def speech_of(prompt: bytes) -> np.ndarray:
    return decode(prompt).samples


def test_prompt_check_passes_a_good_prompt(http, male_prompt):
    report = check(http, male_prompt, EN_PROMPT)
    assert report["ok"] and report["problems"] == []
    assert 4 < report["speech_seconds"] <= report["seconds"] < 6
    assert 0.5 < report["peak"] < 1 and report["clipped_fraction"] == 0


def test_prompt_check_names_every_problem(http, male_prompt):
    speech = speech_of(male_prompt)
    silent = check(http, wav(np.zeros(2 * RATE, np.float32), RATE))
    assert silent["peak"] == 0 and silent["speech_seconds"] == 0
    assert len(silent["problems"]) == 1 and "silent" in silent["problems"][0]
    short = check(http, wav(speech[RATE : RATE + RATE // 2], RATE))
    assert len(short["problems"]) == 1 and short["problems"][0].startswith("only 0.")
    assert "at least 1 s of speech" in short["problems"][0]
    clipped = check(http, wav(np.clip(speech * 4, -1, 1), RATE))
    assert len(clipped["problems"]) == 1 and "clipped" in clipped["problems"][0]
    assert clipped["clipped_fraction"] > 0.01
    long = check(http, wav(tone(31, 16000), 16000))
    assert len(long["problems"]) == 1 and "longer than 30 s" in long["problems"][0]
    # all at once: short, clipped, and a transcript over the limit
    many = check(http, wav(np.clip(speech[RATE : RATE + RATE // 2] * 4, -1, 1), RATE), "x" * 1001)
    assert len(many["problems"]) == 3, many["problems"]


def test_prompt_check_refuses_what_is_not_audio(http):
    response = http.post("/web/prompt_check", files={"prompt_audio": ("a.wav", b"not audio at all", "audio/wav")})
    assert response.status_code == 422
    assert message_of(response).startswith("prompt_audio: not a readable audio file")
    response = http.post("/web/prompt_check", data={"prompt_text": "hello"})
    assert response.status_code == 422 and message_of(response).startswith("prompt_audio: ")


# -- the page in Chromium ----------------------------------------------------------------------------------


class Page:
    """A page of the app, with its state (window.voicePage.state) and the browser's complaints."""

    def __init__(self, browser, url: str, **options):
        self.context = browser.new_context(**options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.url = url

    def _console(self, message) -> None:
        # a refused request is logged by the browser ("Failed to load resource"): the tests cause those
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def open(self) -> "Page":
        self.page.goto(self.url + "/")
        return self

    def state(self) -> dict:
        return self.page.evaluate("window.voicePage.state")

    def wait(self, condition: str, timeout: float = 20) -> dict:
        """Wait until ``condition`` (JavaScript, about ``state``) holds. Polled from here: the page's
        Content-Security-Policy forbids the eval that Playwright's own wait_for_function uses."""
        script = f"(() => {{ const state = window.voicePage?.state; return !!state && ({condition}); }})()"
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(script):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}; state: {json.dumps(self.state())[:2000]}")
            time.sleep(0.03)
        return self.state()

    def speak(self, fmt: str, text: str = LONG_TEXT) -> dict:
        self.page.fill("#text", text)
        self.page.select_option("#format", fmt)
        self.page.click("#speak")
        return self.wait("state.done")

    def close(self) -> None:
        self.context.close()


def test_the_page_speaks_clones_and_deletes(server, http, browser, male_prompt, tmp_path):
    url, _app = server
    good, silent, short = tmp_path / "good.wav", tmp_path / "silent.wav", tmp_path / "short.wav"
    good.write_bytes(male_prompt)
    silent.write_bytes(wav(np.zeros(3 * RATE, np.float32), RATE))
    short.write_bytes(wav(speech_of(male_prompt)[RATE : RATE + RATE // 3], RATE))
    view = Page(browser, url, viewport={"width": 1100, "height": 900}).open()
    page = view.page

    # the built-in voices, as the server lists them; no key asked for
    builtin = http.get("/get_available_spks").json()["builtin"]
    state = view.wait("state.voices.builtin.length > 0")
    assert state["voices"]["builtin"] == builtin
    listed = page.eval_on_selector_all('#voice optgroup[label="Built-in"] option', "os => os.map(o => o.value)")
    assert listed == builtin
    assert page.is_hidden("#key-panel")

    # a prompt's problems show before anything is saved
    page.set_input_files("#clone-file", str(silent))
    state = view.wait("state.report !== null")
    assert not state["report"]["ok"] and "silent" in state["problems"][0]
    assert "silent" in page.inner_text("#problems")
    page.set_input_files("#clone-file", str(short))
    state = view.wait("state.report !== null && state.report.speech_seconds > 0")
    assert state["problems"][0].startswith("only 0.")
    assert page.inner_text("#problems") == state["problems"][0]
    assert http.get("/get_available_spks").json()["cloned"] == []

    # the good file: no problems; saved with its transcript
    page.fill("#clone-name", "web_page_voice")
    page.fill("#clone-text", EN_PROMPT)
    page.set_input_files("#clone-file", str(good))
    state = view.wait("state.report !== null && state.report.ok")
    assert page.inner_text("#report-summary").startswith("Looks good")
    page.click("#clone-save")
    state = view.wait("state.voices.cloned.includes('web_page_voice')")
    assert "web_page_voice" in page.inner_text("#cloned-list")
    assert page.input_value("#voice") == "web_page_voice"

    # speak with it, as pcm through Web Audio, while the answer still arrives
    page.select_option("#mode", "zero_shot")
    state = view.speak("pcm")
    assert state["lastError"] is None, state["lastError"]
    assert state["playback"] == "web audio" and state["sampleRate"] == RATE
    assert isinstance(state["firstAudioMs"], int) and state["firstAudioMs"] >= 0
    assert state["decodedSeconds"] > 0.5
    assert abs(state["decodedSeconds"] - state["bytes"] / 2 / RATE) < 1e-6  # every sample received was scheduled
    assert state["playingFromMs"] < state["receivedAllMs"], state  # playing began before the answer had ended
    assert page.inner_text("#first-audio") == f"{state['firstAudioMs']} ms"

    # the download is the answer's bytes
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "speech.pcm"
    assert Path(download.value.path()).stat().st_size == state["bytes"]

    # mp3 through MediaSource, in the 预训练音色 mode
    page.select_option("#mode", "sft")
    state = view.speak("mp3")
    assert state["lastError"] is None, state["lastError"]
    assert state["playback"] == "media source"
    assert state["decodedSeconds"] > 0.5 and isinstance(state["firstAudioMs"], int)
    assert state["playingFromMs"] < state["receivedAllMs"], state
    state = view.wait("state.playing")  # the <audio> element plays it
    assert page.is_visible("#player")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)

    # a format played after its download: decoded by the page
    state = view.speak("flac", "A short one.")
    assert state["playback"] == "after download" and state["decodedSeconds"] > 0.5

    # a recording from the (fake) microphone is checked like a file
    page.click("#record")
    page.wait_for_timeout(1200)
    page.click("#record")
    state = view.wait("state.report !== null || state.problems.length > 0")
    assert state["report"] is not None, state["problems"]  # the server decoded the browser's recording
    assert 0.8 < state["report"]["seconds"] < 3, state["report"]
    assert page.is_visible("#report")

    # errors as the server words them
    expected = message_of(http.post("/web/speak", json={"text": "", "voice": "英文女"}))
    view.speak("mp3", "")
    state = view.wait("state.lastError !== null")
    assert state["lastError"] == expected == "text: must not be empty"
    assert page.inner_text("#error") == expected
    page.set_input_files("#clone-file", str(good))
    page.click("#clone-save")  # the same name again
    state = view.wait("state.lastError !== null && state.lastError !== 'text: must not be empty'")
    files = {"prompt_audio": ("prompt.wav", male_prompt, "audio/wav")}
    again = http.post("/clone", data={"spk_id": "web_page_voice", "prompt_text": EN_PROMPT}, files=files)
    assert again.status_code == 409
    assert page.inner_text("#error") == state["lastError"] == message_of(again)

    # deleted: gone from the page and from the server's list
    page.click("#cloned-list button[aria-label='Delete the voice web_page_voice']")
    state = view.wait("!state.voices.cloned.includes('web_page_voice')")
    assert "web_page_voice" not in page.inner_text("#cloned-list")
    assert page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)") == builtin
    assert "web_page_voice" not in http.get("/get_available_spks").json()["speakers"]
    assert view.errors == []
    view.close()


def test_the_page_fits_a_phone(server, browser):
    view = Page(browser, server[0], viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).open()
    page = view.page
    view.wait("state.voices.builtin.length > 0")
    view.speak("mp3", "A phone sized test.")
    view.speak("wav", "")  # an error message on show too
    view.wait("state.lastError !== null")
    page.select_option("#mode", "instruct")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == 390, width
    # the controls stack: the voice select is below the mode select, each as wide as the form
    mode, voice = page.locator("#mode").bounding_box(), page.locator("#voice").bounding_box()
    assert voice["y"] > mode["y"] + mode["height"] and abs(voice["width"] - mode["width"]) < 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-phone.png"), full_page=True)
    assert view.errors == []
    view.close()


def test_the_page_asks_for_a_key_when_the_server_wants_one(browser, male_prompt, tmp_path):
    """With API keys on, the page asks for one on the first 401, keeps it, and acts as the key's user."""
    key = "web-page-test-key-0123456789"
    (tmp_path / "keys").write_text(f"{key} page_user\n")
    settings = Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", api_keys_file=tmp_path / "keys")
    prompt = tmp_path / "good.wav"
    prompt.write_bytes(male_prompt)
    with live_server(settings) as (url, _app), httpx.Client(base_url=url, timeout=30) as http:
        view = Page(browser, url)
        page = view.open().page
        state = view.wait("state.needsKey")
        assert page.is_visible("#key-panel")
        assert page.inner_text("#key-reason") == message_of(http.get("/get_available_spks"))
        assert state["voices"]["builtin"] == []
        page.fill("#key", "a-wrong-key-but-long-enough")
        page.click("#key-form button[type=submit]")
        view.wait("state.needsKey")
        wrong = http.get("/get_available_spks", headers={"X-API-Key": "a-wrong-key-but-long-enough"})
        assert page.inner_text("#key-reason") == message_of(wrong)
        page.fill("#key", key)
        page.click("#key-form button[type=submit]")
        view.wait("state.voices.builtin.length > 0")
        assert page.is_hidden("#key-panel")
        assert page.evaluate("localStorage.getItem('cosyvoice.apiKey')") == key

        # the voice is the key's user's: cloned, spoken with and deleted as that user
        page.fill("#clone-name", "keyed_voice")
        page.fill("#clone-text", EN_PROMPT)
        page.set_input_files("#clone-file", str(prompt))
        view.wait("state.report !== null && state.report.ok")
        page.click("#clone-save")
        view.wait("state.voices.cloned.includes('keyed_voice')")
        mine = http.get("/get_available_spks", headers={"X-API-Key": key}).json()["cloned"]
        assert mine == ["keyed_voice"]
        page.select_option("#mode", "zero_shot")
        state = view.speak("pcm", "With a key.")
        assert state["lastError"] is None and state["decodedSeconds"] > 0.5

        # a new visit sends the stored key at once: no key asked for
        page.reload()
        view.wait("state.voices.cloned.includes('keyed_voice')")
        assert page.is_hidden("#key-panel")
        page.click("#cloned-list button[aria-label='Delete the voice keyed_voice']")
        view.wait("state.voices.cloned.length === 0")
        assert http.get("/get_available_spks", headers={"X-API-Key": key}).json()["cloned"] == []
        assert view.errors == []
        view.close()
