"""SpeechService: the one call every door makes. A ``SpeechRequest`` and an ``AudioOutput`` go in, audio comes out."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from app.core.audio_stream import AudioStream
from app.core.encoders import Encoder
from app.core.engine import MODE_LABELS, Mode, SpeechEngine, SynthesisRequest
from app.core.errors import Invalid, Missing, NotFound, StorageFailure, StorageUnavailable, Unsupported
from app.core.formats import AudioOutput
from app.core.limits import Limits
from app.core.names import VoiceName, name_problem
from app.core.prompt_check import PromptReport, check_prompt
from app.core.synthesis import Synthesizer
from app.core.text import speakable_text
from app.core.voice_store import BuiltVoice, Upload, Voices
from app.core.voices import Voice

log = logging.getLogger(__name__)

Disconnected = Callable[[], Awaitable[bool]] | None

# The engines' own speaking rates; a request beyond them is time-stretched (pitch kept) by the output.
ENGINE_SPEEDS = (0.5, 2.0)
SPEEDS = (0.25, 4.0)


@dataclass(frozen=True)
class VoiceRef:
    """Which voice a request speaks with: a stored one by name, or one built from prompt audio.

    Names arrive as sent and are checked (``VoiceName``) where the request uses them, so a name a request
    does not need never fails it.
    """

    name: str = ""
    alias: str = ""  # the voice to use when no voice is called ``name`` (e.g. what an OpenAI voice name stands for)
    user: str = ""  # whose stored voices and prompts may be used
    user_only: bool = False  # the name is one of the user's own voices, never a shared one
    prompt_audio: Upload | None = None
    prompt_key: str = ""  # prompt audio stored under the user's prefix
    prompt_text: str = ""  # the prompt audio's transcript ("" for none)


@dataclass(frozen=True)
class SpeechRequest:
    mode: Mode
    text: str
    voice: VoiceRef
    instruction: str = ""
    speed: float = 1.0
    seed: int = 0
    stream: bool = True  # the engine's own streaming (CosyVoice): first audio after a few tokens
    save_as: str = ""  # keep the voice built from the prompt audio under this name (the user's)


@dataclass(frozen=True)
class Prepared:
    engine_request: SynthesisRequest
    built: BuiltVoice | None = None  # a voice made from prompt audio for this request
    save_as: VoiceName | None = None


class SpeechService:
    def __init__(
        self, engine: SpeechEngine, voices: Voices, synthesizer: Synthesizer, limits: Limits, mp3_bitrate_kbps: int = 64
    ):
        self.engine = engine
        self.voices = voices
        self.synthesizer = synthesizer
        self.limits = limits
        self.mp3_bitrate_kbps = mp3_bitrate_kbps  # every door's compressed audio, unless a request names a bitrate

    async def synthesize(
        self, request: SpeechRequest, output: AudioOutput, is_disconnected: Disconnected = None
    ) -> AudioStream:
        """Synthesis under way, encoded as ``output`` asks; ``is_disconnected`` stops it if the client leaves."""
        prepared = await self.prepare(request)
        if prepared.save_as is not None and prepared.built is not None:
            await self.voices.save(prepared.save_as, prepared.built, True, _user(request.voice))
        encoder = self.encoder(output, request.speed / prepared.engine_request.speed)
        return await self.synthesizer.stream(prepared.engine_request, encoder, is_disconnected)

    def encoder(self, output: AudioOutput, tempo: float = 1.0) -> Encoder:
        """A fresh encoder for one response, at the service's bitrate unless the output names one."""
        return output.encoder(self.engine.sample_rate, tempo, self.mp3_bitrate_kbps)

    def builtin_voices(self) -> list[str]:
        return self.voices.builtin_ids()

    async def available_voices(self, user: VoiceName | None) -> tuple[list[str], list[str]]:
        """(built-in, cloned) names a caller may use; the cloned are the user's own, or without a user the shared
        library's (``Missing`` user when API keys make the shared library nobody's)."""
        return self.voices.builtin_ids(), await self.voices.names(user)

    def load(self) -> tuple[int, int]:
        """(syntheses holding a slot, requests waiting for one), for the metrics."""
        return self.synthesizer.active, self.synthesizer.waiting

    async def check_prompt(self, data: bytes, prompt_text: str = "") -> PromptReport:
        """Every problem of a prompt before it is saved, by cloning's own thresholds."""
        return await asyncio.to_thread(check_prompt, data, self.limits, prompt_text)

    def check_text(self, text: str) -> str:
        text = speakable_text(text).strip()
        if not text:
            raise Missing("text", "must not be empty")
        if not any(ch.isalnum() for ch in text):
            raise Invalid("text", "nothing to speak (no letters or digits)")
        if len(text) > self.limits.max_text_chars:
            raise Invalid("text", f"{len(text)} characters; the limit is {self.limits.max_text_chars}")
        return text

    async def prepare(self, request: SpeechRequest, with_text: bool = True) -> Prepared:
        """Check a request and resolve its voice once into what the engine needs (``with_text=False``: a task's
        text comes later, sentence by sentence)."""
        text = self.check_text(request.text) if with_text else ""
        label = MODE_LABELS[request.mode]
        if request.mode not in self.engine.capabilities:
            raise Unsupported("mode", f"the {self.engine.name} engine does not support {label}")
        if not SPEEDS[0] <= request.speed <= SPEEDS[1]:
            raise Invalid("speed", f"{request.speed:g} is outside {SPEEDS[0]:g} to {SPEEDS[1]:g}")
        instruction = request.instruction.strip()
        if request.mode is Mode.INSTRUCT and not instruction:
            raise Missing("instruction", f"{label} needs an instruction (e.g. 用开心的语气说)")
        ref = request.voice
        if (ref.user_only or ref.prompt_key or request.save_as) and not ref.user:
            raise Missing("user", "needed to use a user's own voice or prompt, or to save a voice")
        engine_speed = min(max(request.speed, ENGINE_SPEEDS[0]), ENGINE_SPEEDS[1])
        engine_request = SynthesisRequest(
            request.mode, text, instruct_text=instruction, speed=engine_speed, seed=request.seed, stream=request.stream
        )
        uses_prompt = ref.prompt_audio is not None or bool(ref.prompt_key)
        if ref.user_only or request.mode is Mode.SFT or (request.mode is Mode.INSTRUCT and not uses_prompt):
            if not ref.name:
                needs = "a speaker or prompt audio" if request.mode is Mode.INSTRUCT else "a speaker"
                raise Missing("voice", f"{label} needs {needs}")
            voice = await self._stored(ref)
            return Prepared(replace(engine_request, speaker=voice.spk_id, voice=voice.profile))
        if uses_prompt:
            if request.mode is Mode.ZERO_SHOT and not ref.prompt_text.strip():
                raise Missing("prompt_text", f"{label} needs the transcript of the prompt audio")
            save_as = VoiceName.check("save_as", request.save_as) if request.save_as else None
            upload = ref.prompt_audio or await self.voices.stored_prompt(_user(ref), ref.prompt_key)
            # in 自然语言控制 the prompt steers the voice; its transcript is not needed
            transcript = "" if request.mode is Mode.INSTRUCT else ref.prompt_text.strip()
            built = await self.voices.build(transcript, upload)
            return Prepared(replace(engine_request, voice=built.profile), built, save_as)
        if ref.name:
            voice = await self._stored(ref)
            if voice.builtin:
                needs = "needs prompt audio or a cloned voice"
                raise Invalid("voice", f"{voice.spk_id!r} is a built-in speaker; {label} {needs}")
            return Prepared(replace(engine_request, speaker=voice.spk_id, voice=voice.profile))
        raise Missing("prompt_audio", f"{label} needs prompt audio (a file or base64) or the name of a cloned voice")

    async def _stored(self, ref: VoiceRef) -> Voice:
        """The stored voice a request names (the user's own first), or the server's voice its name stands for.
        What an alias stands for is looked up among the server's voices first, so a mapped name whose voice is a
        built-in costs one storage lookup (the user's own voice of that name), not two."""
        user = _user(ref)
        if not ref.alias or name_problem(ref.name) is None:  # an alias may be any string, e.g. "My Voice"
            try:
                return await self.voices.get(VoiceName.check("voice", ref.name), user, ref.user_only)
            except (NotFound, StorageFailure, StorageUnavailable):  # storage down: what the name stands for
                if not ref.alias:
                    raise
        try:
            return await self.voices.get(VoiceName.check("voice", ref.alias), user, server_first=True)
        except NotFound:
            problem = f"{ref.name!r} stands for {ref.alias!r}, which this server does not have"
            raise NotFound("voice", problem) from None

    def status(self) -> dict:
        """What /health reports of the core, from memory (the voice table as last read)."""
        synth = self.synthesizer
        cloned = self.voices.library.known_count()
        return {
            "status": "degraded" if self.voices.library.problem else "ok",
            "problem": self.voices.library.problem,
            "engine": self.engine.name,
            "engine_model": self.engine.description,
            "sample_rate": self.engine.sample_rate,
            "storage": self.voices.storage_name,
            "voices": len(self.voices.builtin_ids()) + cloned,
            "builtin_voices": len(self.voices.builtin_ids()),
            "cloned_voices": cloned,
            "active_syntheses": synth.active,
            "queued_syntheses": synth.waiting,
            "max_concurrency": synth.max_concurrency,
        }

    def shared_voice_count(self) -> int:
        """The shared library's cloned voices, the table read again if it changed on disk (blocking)."""
        return len(self.voices.library.names())

    async def readiness(self, timeout: float) -> dict:
        """What /ready reports: the engine is loaded, the voice table reads, the storage answers within ``timeout``;
        and whether saves work (checked again by a 1 MiB write after one failed)."""
        checks = {"engine": "ok", "voice_table": "ok", "storage": "ok"}
        checks["voice_table"] = await asyncio.to_thread(self.voices.library_problem) or "ok"
        checks["storage"] = await self.voices.health.storage_problem(timeout) or "ok"
        ready = all(value == "ok" for value in checks.values())
        # reported, not a reason to stop serving: speech still works, and every replica sharing a full disk or a
        # read-only folder would otherwise leave service together
        checks["saves"] = await self.voices.health.saves_problem(timeout) or "ok"
        return {"ready": ready, "engine": self.engine.name, "storage_kind": self.voices.storage_name, "checks": checks}

    def shutdown(self) -> None:
        self.synthesizer.shutdown()
        self.voices.shutdown()


def _user(ref: VoiceRef) -> VoiceName | None:
    return VoiceName.check("user", ref.user) if ref.user else None
