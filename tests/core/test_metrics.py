"""/metrics (Prometheus text, read with prometheus-client's own parser) and the /ready probe."""

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.support.audio import decode
from tests.support.server import live_server
from tests.support.speech import EN_PROMPT


def _samples(url: str) -> dict[tuple, float]:
    """{(sample name, sorted label pairs): value}"""
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_syntheses_audio_and_voices_are_counted(settings, male_prompt):
    with live_server(settings) as (url, _app):
        first = httpx.post(f"{url}/tts", json={"tts_text": "Hello there.", "spk_id": "英文男"})
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        second = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello again.", response_format="wav")
        assert httpx.post(f"{url}/tts", json={"tts_text": "", "spk_id": "英文男"}).status_code == 400
        assert httpx.get(f"{url}/no/such/path").status_code == 404
        odd = httpx.request("FOO1", f"{url}/tts")  # a client's own method names no label
        assert odd.status_code == 405 and odd.headers["allow"] == "POST"
        clone = {"spk_id": "counted", "prompt_text": EN_PROMPT}
        assert httpx.post(f"{url}/clone", data=clone, files={"prompt_audio": ("p.wav", male_prompt)}).status_code == 200
        m = _samples(url)

        assert _value(m, "cosyvoice_requests_total", route="/tts", method="POST", status="200") == 1
        assert _value(m, "cosyvoice_requests_total", route="/tts", method="POST", status="400") == 1
        assert _value(m, "cosyvoice_requests_total", route="/v1/audio/speech", method="POST", status="200") == 1
        assert _value(m, "cosyvoice_requests_total", route="unmatched", method="GET", status="404") == 1
        assert _value(m, "cosyvoice_requests_total", route="/tts", method="other", status="405") == 1
        assert _value(m, "cosyvoice_first_byte_seconds_count", route="/tts") == 3  # the 400 and 405 answered too
        assert _value(m, "cosyvoice_request_seconds_count", route="/clone") == 1

        assert _value(m, "cosyvoice_syntheses_total", outcome="completed") == 2
        produced = decode(first.content).seconds + decode(second.content).seconds
        assert abs(_value(m, "cosyvoice_audio_seconds_total") - produced) < 0.2, produced
        assert _value(m, "cosyvoice_synthesis_rtf_count") == 2 and _value(m, "cosyvoice_synthesis_rtf_sum") > 0
        assert _value(m, "cosyvoice_synthesis_first_audio_seconds_count") == 2
        assert _value(m, "cosyvoice_syntheses_active") == 0 and _value(m, "cosyvoice_syntheses_queued") == 0

        builtin = len(httpx.get(f"{url}/get_available_spks").json()["builtin"])
        assert _value(m, "cosyvoice_voices", kind="builtin") == builtin and builtin > 0
        assert _value(m, "cosyvoice_voices", kind="shared") == 1


def test_ready_says_what_is_not_ready_and_storage_errors_are_counted(settings, male_prompt):
    with live_server(settings) as (url, _app):
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert ready.json()["checks"] == {"engine": "ok", "voice_table": "ok", "storage": "ok", "saves": "ok"}
        clone = {"spk_id": "kept", "prompt_text": EN_PROMPT}
        assert httpx.post(f"{url}/clone", data=clone, files={"prompt_audio": ("p.wav", male_prompt)}).status_code == 200

        table = settings.data_dir / "espeak" / "spk2info.pt"
        table.write_bytes(b"half-written garbage")
        not_ready = httpx.get(f"{url}/ready")
        assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
        assert "spk2info.pt" in not_ready.json()["checks"]["voice_table"]
        assert httpx.get(f"{url}/health").status_code == 200  # liveness: the process still serves

        refused = httpx.post(
            f"{url}/clone", data={**clone, "spk_id": "new"}, files={"prompt_audio": ("p.wav", male_prompt)}
        )
        assert refused.status_code == 503
        assert _value(_samples(url), "cosyvoice_storage_errors_total", kind="VoiceTableUnavailable") == 1
