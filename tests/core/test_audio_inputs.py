"""Prompt uploads: every common format decodes; every bad prompt gets a 4xx naming the problem."""

import base64
import os

import numpy as np
import pytest

from app.config import Settings
from app.core.audio import WIDE_RATE, prepare_prompt
from tests.support.audio import FORMATS, decode, encode, tone, wav
from tests.support.doors import clone, error_of
from tests.support.server import running
from tests.support.speech import EN_PROMPT


@pytest.fixture(scope="module")
def speech_16k(male_prompt):
    from app.core.audio import decode_to_mono

    return decode_to_mono(male_prompt, "test")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_clone_from_every_common_format(client, speech_16k, fmt):
    data = encode(speech_16k, 16000, fmt)
    suffix = FORMATS[fmt][2]
    response = client.post(
        "/clone",
        data={"spk_id": f"v_{fmt}", "prompt_text": EN_PROMPT},
        files={"prompt_audio": (f"prompt.{suffix}", data, "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    voice = response.json()["voice"]
    assert voice["variant"] == "male"
    assert 90 < voice["measured"]["median_f0_hz"] < 140  # the same voice whatever the container
    assert 3.0 < voice["measured"]["speech_seconds"] < 7.0


def _clone_error(client, data: bytes, field_check: str = "prompt_audio:"):
    response = clone(client, "bad", data)
    assert 400 <= response.status_code < 500, response.text
    message = error_of(response)["message"]
    assert message.startswith(field_check), message
    return response.status_code, message


def test_empty_prompt(client):
    assert "empty" in _clone_error(client, b"")[1]


def test_non_audio_prompt(client):
    assert "not a readable audio file" in _clone_error(client, os.urandom(5000))[1]
    assert "not a readable audio file" in _clone_error(client, b"%PDF-1.4 this is a document")[1]


def test_silent_prompt(client):
    assert "silent" in _clone_error(client, wav(tone(3.0) * 0, 16000))[1]


def test_too_short_prompt(client):
    status, message = _clone_error(client, wav(tone(0.6), 16000))
    assert status == 422 and "at least 1 s" in message


def test_too_long_prompt(client):
    status, message = _clone_error(client, wav(tone(31.0), 16000))
    assert status == 422 and "longer than 30 s" in message


def test_short_sound_padded_with_silence_is_still_too_short(client):
    import numpy as np

    padded = np.concatenate([np.zeros(32000, np.float32), tone(0.5), np.zeros(32000, np.float32)])
    assert "only 0.5" in _clone_error(client, wav(padded, 16000))[1]


def test_video_without_audio_track(client):
    import io

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    assert "no audio stream" in _clone_error(client, buf.getvalue())[1]


def test_bad_base64_prompt_names_its_field(client):
    body = {"tts_text": "hi", "prompt_text": EN_PROMPT, "prompt_audio_base64": "@@@not base64@@@"}
    response = client.post("/tts/zero_shot", json=body)
    assert error_of(response)["message"] == "prompt_audio_base64: not valid base64"
    body["prompt_audio_base64"] = base64.b64encode(b"definitely not audio").decode()
    assert error_of(client.post("/tts/zero_shot", json=body))["message"].startswith("prompt_audio_base64:")


def test_missing_clone_fields(client, male_prompt):
    files = {"prompt_audio": ("p.wav", male_prompt, "audio/wav")}
    response = client.post("/clone", data={"spk_id": "x"}, files=files)
    assert error_of(response)["message"].startswith("prompt_text:")
    response = client.post("/clone", data={"spk_id": "x", "prompt_text": "  "}, files=files)
    assert error_of(response)["message"].startswith("prompt_text:")
    response = client.post("/clone", data={"spk_id": "x", "prompt_text": EN_PROMPT})
    assert error_of(response)["message"].startswith("prompt_audio:")
    response = client.post("/clone", data={"prompt_text": EN_PROMPT}, files=files)
    assert error_of(response)["message"].startswith("spk_id:")
    assert error_of(client.post("/upload_audio", data={"x": "y"}))["message"].startswith("file:")
    assert "not a readable" in error_of(client.post("/upload_audio", files={"file": ("a.wav", b"junk")}))["message"]


def test_upload_over_the_limit_is_refused_while_reading(tmp_path, speech_16k):
    settings = Settings(data_dir=tmp_path / "d", model_dir=tmp_path / "m", max_upload_mb=0.5)
    big = os.urandom(700 * 1024)
    with running(settings) as client:
        response = client.post("/upload_audio", files={"file": ("big.wav", big)})
        assert response.status_code == 413
        assert "0.5 MB" in error_of(response)["message"]

        def chunked():  # no Content-Length: the limit must bite while the body streams in
            for start in range(0, len(big), 64 * 1024):
                yield big[start : start + 64 * 1024]

        headers = {"content-type": "application/json"}
        response = client.post("/tts", content=chunked(), headers=headers)
        assert response.status_code == 413
        small = encode(speech_16k, 16000, "mp3")
        assert clone(client, "fits", small).status_code == 200


def test_upload_audio_returns_what_was_sent(client, speech_16k):
    data = encode(speech_16k, 16000, "ogg_opus")
    body = client.post("/upload_audio", files={"file": ("x.opus", data, "audio/ogg")}).json()
    assert base64.b64decode(body["audio_base64"]) == data
    assert decode(base64.b64decode(body["audio_base64"])).seconds > 3


def test_prompt_with_nan_samples(client):
    import numpy as np

    samples = tone(3.0)
    samples[1000] = np.nan
    data = encode(samples, 16000, "wav_f32")
    assert "NaN" in _clone_error(client, data)[1]


def test_urlencoded_base64_with_unescaped_plus(client, male_prompt):
    """curl -d "prompt_audio_base64=$(base64 -w0 p.wav)" sends '+' unescaped; it arrives as a space."""
    from urllib.parse import urlencode

    encoded = base64.b64encode(male_prompt).decode()
    assert "+" in encoded
    body = urlencode({"tts_text": "Hello there.", "prompt_text": EN_PROMPT}) + "&prompt_audio_base64=" + encoded
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = client.post("/tts/zero_shot", content=body.encode(), headers=headers)
    assert response.status_code == 200, response.text
    assert decode(response.content).seconds > 0.5


def test_prompts_keep_their_band_above_8_khz_for_the_24_khz_features():
    """CosyVoice reads prompt mel features at 24 kHz (CosyVoice3 up to 12 kHz): the prepared prompt carries
    a 24 kHz copy, not one upsampled from 16 kHz."""
    rate = 48000
    t = np.arange(int(1.5 * rate)) / rate
    signal = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 10000 * t)).astype(np.float32)
    prompt = prepare_prompt(wav(signal, rate), "prompt_audio", 1.0, 30.0)

    def share_above_8khz(samples: np.ndarray, sample_rate: int) -> float:
        power = np.abs(np.fft.rfft(samples)) ** 2
        return float(power[np.fft.rfftfreq(samples.size, 1 / sample_rate) > 8000].sum() / power.sum())

    assert share_above_8khz(prompt.wideband, WIDE_RATE) > 0.3  # the 10 kHz tone is there
    assert prompt.samples.size == pytest.approx(prompt.wideband.size * 2 / 3, abs=2)  # the same audio at 16 kHz
    assert prompt.speech_seconds == pytest.approx(1.5, abs=0.05)


def test_a_30_s_prompt_stays_within_30_s_with_its_tail():
    prompt = prepare_prompt(wav(tone(30.0, 24000), 24000), "prompt_audio", 1.0, 30.0)
    assert prompt.wideband.size <= 30 * WIDE_RATE
