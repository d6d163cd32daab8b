"""The Wyoming door (Home Assistant's protocol for local voice services) on ``COSYVOICE_WYOMING_PORT``: what it
offers (``info``), which voices it may use, and its TCP server, started and stopped with the HTTP app.

It has no authentication of its own, like every Wyoming service: bind it to a trusted network. It lists and
speaks the built-in voices, the shared library's cloned voices when the server runs without API keys, and the
voices of ``COSYVOICE_WYOMING_USER`` when one is set (with API keys, the only cloned voices it can reach).
"""

import asyncio
import logging
from functools import partial

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncTcpServer

from app.api.wyoming.session import Session
from app.core.errors import DomainError, Invalid, NotFound
from app.core.names import VoiceName
from app.core.speech import SpeechService, VoiceRef

log = logging.getLogger(__name__)

PROGRAM = "cosyvoice-service"
ATTRIBUTION = Attribution(name="FunAudioLLM CosyVoice", url="https://github.com/FunAudioLLM/CosyVoice")


class WyomingDoor:
    def __init__(self, speech: SpeechService, user: str, version: str, shared: bool):
        self.speech = speech
        self.user = user
        self.shared = shared  # without API keys the shared library's voices are everybody's
        self.version = version
        self.sessions: set[asyncio.Task] = set()  # the connections' tasks, waited for at shutdown

    def voice(self, name: str) -> VoiceRef:
        return VoiceRef(name=name, user=self.user)

    async def voices(self) -> list[tuple[str, bool]]:
        """(name, built-in) of every voice this door may speak with: the user's first, as a request finds them."""
        found = [(name, True) for name in self.speech.builtin_voices()]
        owners = [VoiceName(self.user)] if self.user else []
        if self.shared:
            owners.append(None)
        for owner in owners:
            try:
                found += [(name, False) for name in (await self.speech.available_voices(owner))[1]]
            except DomainError as exc:  # storage down: the built-ins still speak
                log.warning("Wyoming: the voices of %s are not listed: %s", owner or "the shared library", exc)
        unique = dict.fromkeys(name for name, _ in found)
        builtin = {name for name, is_builtin in found if is_builtin}
        return [(name, name in builtin) for name in unique]

    async def info(self) -> Info:
        engine = self.speech.engine
        voices = [
            TtsVoice(
                name=name,
                description=name if builtin else f"{name} (cloned)",
                attribution=ATTRIBUTION,
                installed=True,
                version=None,
                languages=engine.voice_languages(name if builtin else None),
            )
            for name, builtin in await self.voices()
        ]
        program = TtsProgram(
            name=PROGRAM,
            description=f"CosyVoice voice service: {engine.description}",
            attribution=ATTRIBUTION,
            installed=True,
            version=self.version,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    async def voice_for(self, wanted: object) -> VoiceRef:
        """The voice a synthesize event asks for (``{"name", "speaker"}``, ``{"language"}``, or none: the first)."""
        if wanted is None:
            wanted = {}
        if not isinstance(wanted, dict):
            raise Invalid("voice", "expected an object with a name")
        name, language = wanted.get("name"), wanted.get("language")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise Invalid("voice", "name: expected a voice's name (describe lists them)")
            return self.voice(name.strip())
        engine = self.speech.engine
        for candidate, builtin in await self.voices():
            if language is None or language in engine.voice_languages(candidate if builtin else None):
                return self.voice(candidate)
        speaks = f" speaking {language!r}" if language is not None else ""
        raise NotFound("voice", f"no voice{speaks} here; describe lists them")


class WyomingServer:
    def __init__(self, door: WyomingDoor, host: str, port: int):
        self.door = door
        self.tcp = AsyncTcpServer(host, port)

    async def start(self) -> None:
        await self.tcp.start(partial(Session, door=self.door))
        log.info("Wyoming (Home Assistant) listening on %s:%d", self.tcp.host, self.tcp.port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, end every connection, and wait (a while) for their work to stop."""
        await self.tcp.stop()
        if self.door.sessions:
            await asyncio.wait(list(self.door.sessions), timeout=grace)


async def start(speech: SpeechService, host: str, port: int, user: str, version: str, shared: bool) -> WyomingServer:
    server = WyomingServer(WyomingDoor(speech, user, version, shared), host, port)
    await server.start()
    return server
