"""SpeechService: what every route calls. Resolves a request's voice, then hands it to the Synthesizer."""

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app.config import Settings
from app.errors import InvalidInput, MissingField, NotFound, Unsupported
from app.names import check_name
from app.services.audio import PromptAudio, prepare_prompt
from app.services.engines.base import MODE_LABELS, Mode, SpeechEngine, SynthesisRequest, VoiceRejected
from app.services.synthesis import AudioStream, Synthesizer
from app.services.user_voices import UserVoices, user_key
from app.services.voices import Voice, VoiceLibrary

log = logging.getLogger(__name__)

Disconnected = Callable[[], Awaitable[bool]] | None


@dataclass(frozen=True)
class Upload:
    """Prompt audio as sent: the bytes and the field they came in (for error messages)."""

    field: str
    data: bytes
    filename: str = ""


@dataclass(frozen=True)
class SpeechSpec:
    mode: Mode
    text: str
    spk_id: str = ""
    prompt_text: str = ""
    instruct_text: str = ""
    prompt_audio: Upload | None = None
    speed: float = 1.0
    seed: int = 0
    stream: bool = True
    # per-user storage (the seed's OSS fields): the user, their voice to use, the prompt key, where to save
    user_id: str = ""
    custom_voice: str = ""  # spk_customize: the user's voice file, instead of spk_id / prompt audio
    prompt_key: str = ""  # prompt_speech_16k: prompt audio stored under the user's prefix
    save_as: str = ""  # exp_name: 3s极速复刻 saves the voice it built under this name


def decode_base64_audio(field: str, value: str) -> Upload:
    payload = value.strip()
    if payload.startswith("data:") and "," in payload:  # a data: URL from a browser
        payload = payload.split(",", 1)[1]
    try:
        # a form-urlencoded "+" arrives as a space; base64 never contains spaces
        data = base64.b64decode("".join(payload.replace(" ", "+").split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field}: not valid base64") from None
    return Upload(field, data)


class SpeechService:
    def __init__(
        self,
        settings: Settings,
        engine: SpeechEngine,
        voices: VoiceLibrary,
        user_voices: UserVoices,
        synthesizer: Synthesizer,
    ):
        self.settings = settings
        self.engine = engine
        self.voices = voices
        self.user_voices = user_voices
        self.synthesizer = synthesizer
        self._storage_threads = ThreadPoolExecutor(8, thread_name_prefix="storage")

    # -- voices ---------------------------------------------------------------------------
    async def prompt(self, upload: Upload) -> PromptAudio:
        s = self.settings
        return await asyncio.to_thread(
            prepare_prompt, upload.data, upload.field, s.prompt_min_seconds, s.prompt_max_seconds
        )

    async def make_voice(self, prompt_text: str, upload: Upload) -> tuple[dict, PromptAudio]:
        prompt = await self.prompt(upload)
        try:
            profile = await self.synthesizer.run(self.engine.make_voice, prompt_text, prompt)
        except VoiceRejected as exc:
            raise InvalidInput(f"{upload.field}: {exc}") from None
        return profile, prompt

    async def clone(self, spk_id: str, prompt_text: str, upload: Upload, overwrite: bool, user_id: str = "") -> Voice:
        """Make a voice and save it: in the user's storage namespace, or in the engine's spk2info.pt."""
        if user_id:
            await self.in_storage(self.user_voices.ensure_writable, user_id, spk_id, overwrite)  # fail fast
        else:
            await asyncio.to_thread(self.voices.ensure_writable, spk_id, overwrite)  # fail fast: building costs
        profile, prompt = await self.make_voice(prompt_text, upload)
        if user_id:
            save = self.user_voices.save
            await self.in_storage(save, user_id, spk_id, profile, prompt_text, prompt, overwrite)
            voice = Voice(spk_id, False, profile)
        else:
            voice = await asyncio.to_thread(self.voices.add, spk_id, profile, prompt_text, prompt, overwrite)
        log.info("cloned voice %r from %.1f s of speech", spk_id, prompt.speech_seconds)
        return voice

    async def voice(self, spk_id: str, user_id: str = "", field: str = "spk_id") -> Voice:
        """A speaker by name: the user's own voice first (when a user is given), then the shared library."""
        if user_id:
            check_name("user_id", user_id)
            try:
                profile = await self.in_storage(self.user_voices.load, user_id, spk_id, field)
                return Voice(spk_id, False, profile)
            except NotFound:
                pass
        return await asyncio.to_thread(self.voices.get, spk_id, field)

    async def list_voices(self, user_id: str = "") -> tuple[list[str], list[str]]:
        """(built-in ids, cloned ids): with a user, that user's own voices instead of the shared ones."""
        if user_id:
            cloned = await self.in_storage(self.user_voices.names, user_id)
        else:
            cloned = await asyncio.to_thread(self.voices.cloned_ids)
        return self.voices.builtin_ids(), cloned

    def shutdown(self) -> None:
        self.synthesizer.shutdown()
        self._storage_threads.shutdown(wait=False, cancel_futures=True)

    async def in_storage(self, fn, *args):
        """Storage calls get threads of their own: a slow bucket must not starve other work."""
        return await asyncio.get_running_loop().run_in_executor(self._storage_threads, fn, *args)

    # -- synthesis ------------------------------------------------------------------------
    def check_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise MissingField("tts_text: must not be empty")
        if not any(ch.isalnum() for ch in text):
            raise InvalidInput("tts_text: nothing to speak (no letters or digits)")
        if len(text) > self.settings.max_text_chars:
            raise InvalidInput(f"tts_text: {len(text)} characters; the limit is {self.settings.max_text_chars}")
        return text

    async def resolve(self, spec: SpeechSpec) -> SynthesisRequest:
        """Turn what a client sent into an engine request: which speaker or voice, which mode."""
        text = self.check_text(spec.text)
        label = MODE_LABELS[spec.mode]
        if spec.mode not in self.engine.capabilities:
            raise Unsupported(f"mode: the {self.engine.name} engine does not support {label}")
        common = {"mode": spec.mode, "text": text, "speed": spec.speed, "seed": spec.seed, "stream": spec.stream}
        instruct = spec.instruct_text.strip()
        if spec.mode is Mode.INSTRUCT and not instruct:
            raise MissingField(f"instruct_text: {label} needs an instruction (e.g. 用开心的语气说)")
        common["instruct_text"] = instruct
        if (spec.custom_voice or spec.prompt_key or spec.save_as) and not spec.user_id:
            raise MissingField("user_id: needed with spk_customize, prompt_speech_16k or exp_name")
        if spec.custom_voice:
            profile = await self.in_storage(self.user_voices.load, spec.user_id, spec.custom_voice, "spk_customize")
            return SynthesisRequest(speaker=spec.custom_voice, voice=profile, voice_field="spk_customize", **common)
        if spec.mode is Mode.SFT or (spec.mode is Mode.INSTRUCT and spec.prompt_audio is None and not spec.prompt_key):
            if not spec.spk_id:
                needs = "a speaker or prompt audio" if spec.mode is Mode.INSTRUCT else "a speaker"
                raise MissingField(f"spk_id: {label} needs {needs}; GET /get_available_spks lists the speakers")
            voice = await self.voice(spec.spk_id, spec.user_id)
            return SynthesisRequest(speaker=voice.spk_id, voice=voice.profile, **common)
        upload = spec.prompt_audio
        if upload is None and spec.prompt_key:
            key = user_key(spec.user_id, spec.prompt_key, "prompt_speech_16k")
            missing = f"prompt_speech_16k: user {spec.user_id!r} has no object {spec.prompt_key!r}"
            data = await self.in_storage(self.user_voices.fetch, key, "prompt_speech_16k", missing)
            upload = Upload("prompt_speech_16k", data)
        if upload is not None:
            if spec.mode is Mode.ZERO_SHOT and not spec.prompt_text.strip():
                raise MissingField(f"prompt_text: {label} needs the transcript of the prompt audio")
            # in 自然语言控制 the seed's prompt_text is the instruction, not a transcript
            transcript = "" if spec.mode is Mode.INSTRUCT else spec.prompt_text.strip()
            profile, prompt = await self.make_voice(transcript, upload)
            if spec.save_as and spec.mode is Mode.ZERO_SHOT:
                check_name("exp_name", spec.save_as)
                save = self.user_voices.save
                args = (spec.user_id, spec.save_as, profile, spec.prompt_text.strip(), prompt, True)
                await self.in_storage(save, *args)
            return SynthesisRequest(voice=profile, **common)
        if spec.spk_id:
            voice = await self.voice(spec.spk_id, spec.user_id)
            if voice.builtin:
                raise InvalidInput(
                    f"spk_id: {spec.spk_id!r} is a built-in speaker; {label} needs prompt audio or a cloned voice"
                )
            return SynthesisRequest(speaker=voice.spk_id, voice=voice.profile, **common)
        raise MissingField(
            f"prompt_audio: {label} needs prompt audio (a file or base64) or the spk_id of a cloned voice"
        )

    async def stream(self, spec: SpeechSpec, kind: str, is_disconnected: Disconnected = None) -> AudioStream:
        """Synthesis under way; ``is_disconnected`` (the request's) stops it if the client leaves."""
        return await self.synthesizer.stream(await self.resolve(spec), kind, is_disconnected)

    async def render(self, spec: SpeechSpec, kind: str, is_disconnected: Disconnected = None) -> bytes:
        """The whole utterance at once (e.g. one WAV)."""
        stream = await self.stream(spec, kind, is_disconnected)
        return await stream.collect()
