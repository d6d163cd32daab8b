"""The format table: every format streams, decodes with PyAV to the length the engine made, at every rate."""

import httpx
import numpy as np
import pytest

from app.core.errors import Unsupported
from app.core.formats import FORMATS, SAMPLE_RATES, AudioOutput, audio_format
from tests.support.audio import decode, decode_pcm, decoder_slack, tone
from tests.support.server import last_engine_seconds, live_server, long_settings
from tests.support.speech import SENTENCE

SOURCE_RATE = 24000


def _decoded(name: str, data: bytes, rate: int):
    return decode_pcm(data, rate) if name == "pcm" else decode(data)


def _encode_in_chunks(output: AudioOutput, samples: np.ndarray, chunk: int = 2400, tempo: float = 1.0) -> list[bytes]:
    encoder = output.encoder(SOURCE_RATE, tempo)
    pieces = [encoder.encode(samples[i : i + chunk]) for i in range(0, samples.size, chunk)]
    return [*pieces, encoder.flush()]


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_at_every_rate_decodes_to_the_engines_length(name, rate):
    samples = tone(2.0, SOURCE_RATE)
    output = AudioOutput(FORMATS[name], rate)
    pieces = _encode_in_chunks(output, samples)
    assert any(pieces[:-1]), "nothing left before the flush: the format does not stream"
    got = _decoded(name, b"".join(pieces), output.rate_for(SOURCE_RATE))
    expected_rate = 48000 if name == "opus" else rate  # Ogg Opus always decodes at 48 kHz
    assert got.rate == expected_rate
    expected = samples.size * expected_rate / SOURCE_RATE
    assert abs(got.samples.size - expected) <= decoder_slack(name, expected_rate), (got.samples.size, expected)
    assert got.rms > 0.05  # sound, not silence


@pytest.mark.parametrize("tempo", [0.25, 0.5, 1.7, 4.0])
def test_tempo_changes_the_length_and_keeps_the_pitch(tempo):
    samples = tone(2.0, SOURCE_RATE, f0=180.0)
    got = decode_pcm(b"".join(_encode_in_chunks(AudioOutput(FORMATS["pcm"]), samples, tempo=tempo)), SOURCE_RATE)
    assert abs(got.samples.size - samples.size / tempo) < 0.03 * samples.size / tempo
    assert abs(got.median_f0() - 180.0) < 10, got.median_f0()


def test_the_streamed_wav_header_says_unknown_length_and_whole_wav_is_exact():
    samples = tone(1.0, SOURCE_RATE)
    streamed = b"".join(_encode_in_chunks(AudioOutput(FORMATS["wav"]), samples))
    assert streamed[4:8] == b"\xff\xff\xff\xff" and streamed[40:44] == b"\xff\xff\xff\xff"
    whole = b"".join(_encode_in_chunks(AudioOutput(FORMATS["wav"], whole=True), samples))
    assert int.from_bytes(whole[40:44], "little") == samples.size * 2
    assert decode(whole).samples.size == samples.size


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(Unsupported) as error:
        audio_format("ogg")
    assert error.value.param == "format" and "mp3" in error.value.problem


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_leaves_before_synthesis_ends(tmp_path, name):
    """Over HTTP: the first bytes of every format arrive while the engine is still synthesizing."""
    with live_server(long_settings(tmp_path)) as (url, app):
        synth = app.state.speech.synthesizer
        body = {"model": "tts-1", "input": SENTENCE * 30, "voice": "alloy", "response_format": name}
        with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=60) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"] == FORMATS[name].media_type
            chunks = response.iter_bytes()
            data = next(chunks)
            assert data and synth.active == 1 and synth.stats.completed == 0, "the first bytes waited for the end"
            data += b"".join(chunks)
        got = _decoded(name, data, 24000)
        expected = last_engine_seconds(app) * got.rate
        assert abs(got.samples.size - expected) <= decoder_slack(name, got.rate) + 0.002 * expected, (
            got.samples.size,
            expected,
        )
