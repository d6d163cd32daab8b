"""CosyVoice engine: upstream's CosyVoice2 / CosyVoice3 classes behind the service's engine protocol.

One adapter for both model generations (told apart by ``cosyvoice2.yaml`` / ``cosyvoice3.yaml``) and
both API generations (``prompt_speech_16k`` tensors before Dec 2025, ``prompt_wav`` after; told apart by
inspecting the installed code). What it takes care of:

- text: upstream's normalisation and sentence splitting run here, before upstream sees the text, so
  that CosyVoice3's ``<|endofprompt|>`` (which switches them off inside upstream) can be added to every
  sentence that needs it, and long text streams sentence by sentence on both generations;
- voices: a request's voice is read, never changed (instruct2's instruction goes into a copy of it);
- synthesis: upstream's modules (LLM, flow, HiFT) and weights, driven by the service's own loop
  (``pipeline.py``), not by ``CosyVoice2Model.tts``: the LLM stage without its discarded text head, a
  chunked flow whose work per chunk is bounded, a voice's prompt run once and kept, no polling; each
  request has its own random generators, so a seed gives the same audio whatever runs beside it;
- prompt audio reaches upstream already decoded by the service (``upstream.py``).
"""

import inspect
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from app.core.audio import PromptAudio
from app.core.engine import MODE_LABELS, Mode, SynthesisRequest, VoiceRejected
from app.core.errors import EngineFailure, Invalid
from app.core.text import split_sentences
from app.engines.cosyvoice.llm import LMFailure, LMInput
from app.engines.cosyvoice.pipeline import BatchOptions, Generators, Pipeline, StreamOptions, Utterance
from app.engines.cosyvoice.upstream import (
    GET_UPSTREAM,
    GET_WEIGHTS,
    EngineStartError,
    PromptWav,
    import_upstream,
    model_generation,
)
from app.engines.cosyvoice.voices import PROMPT_MARK, ModelSizes, voice_problem

log = logging.getLogger(__name__)

LANGUAGES = {2: ("zh", "en", "ja", "ko", "yue"), 3: ("zh", "en", "ja", "ko", "yue", "de", "es", "fr", "it", "ru")}

# CosyVoice3's documented prompt convention: a system prompt (or an instruction) ends with the marker
V3_SYSTEM = "You are a helpful assistant."


class CosyVoiceEngine:
    name = "cosyvoice"
    capabilities = frozenset(Mode)

    def __init__(
        self,
        model_dir: Path,
        source: Path | None = None,
        fp16: bool = False,
        load_jit: bool = False,
        load_trt: bool = False,
        load_vllm: bool = False,
        text_frontend: bool = True,
        stream: StreamOptions | None = None,
        batch: BatchOptions | None = None,
    ):
        if not model_dir.is_dir():
            raise EngineStartError(f"the model dir {model_dir} does not exist; {GET_WEIGHTS}")
        self.generation = model_generation(model_dir)
        upstream, _ = import_upstream(source)
        cls = getattr(upstream, f"CosyVoice{self.generation}", None)
        if cls is None:
            raise EngineStartError(
                f"{model_dir} is a CosyVoice{self.generation} model and the upstream code in use "
                f"({Path(upstream.__file__).parent.parent}) has no CosyVoice{self.generation} class; {GET_UPSTREAM}"
            )
        wanted = {"load_jit": load_jit, "load_trt": load_trt, "load_vllm": load_vllm, "fp16": fp16, "final": True}
        accepted = inspect.signature(cls.__init__).parameters
        ignored = [f"COSYVOICE_{k.upper()}" for k, v in wanted.items() if v and k not in accepted and k != "final"]
        if ignored:
            log.warning("upstream's CosyVoice%d does not take %s: ignored", self.generation, ", ".join(ignored))
        self._model = cls(str(model_dir), **{k: v for k, v in wanted.items() if k in accepted})
        self.sample_rate = int(self._model.sample_rate)
        self._takes_paths = "prompt_wav" in inspect.signature(cls.inference_zero_shot).parameters
        self._text_frontend = text_frontend
        try:
            self.pipeline = Pipeline(self._model.model, stream or StreamOptions(), fp16, batch=batch or BatchOptions())
        except ValueError as exc:  # settings the model cannot stream with (COSYVOICE_STREAM_*), named
            raise EngineStartError(f"CosyVoice{self.generation} from {model_dir}: {exc}") from exc
        frontend, flow = self._model.frontend, self._model.model.flow
        self.sizes = ModelSizes(
            generation=self.generation,
            embed_dim=flow.spk_embed_affine_layer.in_features,
            mel_bins=flow.output_size,
            text_vocab=len(frontend.tokenizer.tokenizer),
            speech_vocab=int(self._model.model.llm.speech_token_size),
            mark_id=frontend.tokenizer.tokenizer.convert_tokens_to_ids(PROMPT_MARK),
            mel_per_token=flow.token_mel_ratio,
        )
        self._builtins = [k for k, v in frontend.spk2info.items() if isinstance(v, dict) and "embedding" in v]
        # a voice made without a transcript holds no more prompt text than this (CosyVoice3: its system prompt)
        bare = f"{V3_SYSTEM}{PROMPT_MARK}" if self.generation == 3 else ""
        self._bare_prompt_len = int(frontend._extract_text_token(bare)[1]) if bare else 0
        code = Path(upstream.__file__).parents[2]
        api = "prompt_wav" if self._takes_paths else "prompt_speech_16k"
        self.description = f"CosyVoice{self.generation} from {model_dir}, upstream code from {code} ({api} API)"
        log.info("%s; %d Hz; built-in speakers: %s", self.description, self.sample_rate, ", ".join(self._builtins))

    # -- voices ---------------------------------------------------------------------------
    def builtin_speakers(self) -> list[str]:
        return list(self._builtins)

    def voice_languages(self, speaker: str | None) -> list[str]:
        """Every voice speaks every language of its model (cross-lingual by design): upstream's README lists
        Chinese, English, Japanese, Korean and Cantonese for CosyVoice2, and adds five European ones for 3."""
        return list(LANGUAGES[self.generation])

    def make_voice(self, prompt_text: str, prompt: PromptAudio) -> dict:
        """A zero-shot voice in upstream's exact spk2info format, made by upstream's add_zero_shot_spk."""
        key = f"__new_{uuid.uuid4().hex}"
        if self._takes_paths:
            audio = PromptWav(prompt)
        else:  # the older API takes the 16 kHz tensor and resamples it itself
            audio = torch.from_numpy(np.ascontiguousarray(prompt.samples, dtype=np.float32))[None]
        text = self._normalize(prompt_text)
        if self.generation == 2:  # the marker is CosyVoice3's convention; in a CosyVoice2 transcript it is noise
            text = text.replace(PROMPT_MARK, "")
        elif PROMPT_MARK not in text:
            text = f"{V3_SYSTEM}{PROMPT_MARK}{text}"
        try:
            self._model.add_zero_shot_spk(text, audio, key)
        except AssertionError as exc:  # upstream asserts on prompts it cannot use
            raise VoiceRejected(str(exc) or "the model cannot use this prompt") from exc
        finally:
            entry = self._model.frontend.spk2info.pop(key, None)
        problem = self.voice_problem(entry)
        if problem:  # never save a voice this engine would then refuse
            raise VoiceRejected(f"the model made a voice it cannot use ({problem})")
        self.pipeline.warm(self._flow_prompt(entry, LMInput.empty()))
        return entry

    def voice_problem(self, profile: object) -> str | None:
        return voice_problem(profile, self.sizes)

    def describe_voice(self, profile: dict) -> dict:
        if "embedding" in profile:
            return {"kind": "sft"}
        tokens = int(profile["flow_prompt_speech_token"].shape[1])
        return {
            "kind": "zero_shot",
            "generation": self.generation,
            "prompt_tokens": tokens,
            "prompt_seconds": round(tokens / 25, 2),
        }

    # -- synthesis ------------------------------------------------------------------------
    def synthesize(self, request: SynthesisRequest) -> Iterator[np.ndarray]:
        voice = self._request_voice(request)
        sft = "embedding" in voice
        if not sft and request.mode in (Mode.SFT, Mode.ZERO_SHOT) and not self._has_transcript(voice):
            # a voice cloned without a transcript speaks as CosyVoice's cross-lingual mode does, which reads
            # only the prompt's sound (zero-shot would pair its speech tokens with no text)
            request = replace(request, mode=Mode.CROSS_LINGUAL)
        elif not sft and request.mode is Mode.SFT:  # a cloned voice asked for as a "pretrained" speaker
            request = replace(request, mode=Mode.ZERO_SHOT)
        # upstream's LLM reads the marker from the text itself for built-in speakers and in cross-lingual
        # mode (whose frontend drops the prompt text); elsewhere the voice's prompt carries it
        needs_mark = self.generation == 3 and (request.mode is Mode.CROSS_LINGUAL or (sft and request.mode is Mode.SFT))
        texts = self._texts(request.text, needs_mark)
        generators = self.pipeline.generators(request.seed)  # one per request: sentences continue its draws
        for text in texts:
            if request.cancelled is not None and request.cancelled.is_set():
                return
            yield from self._run(request, voice, sft, text, generators)

    def _has_transcript(self, voice: dict) -> bool:
        return int(voice.get("prompt_text_len", 0)) > self._bare_prompt_len

    def _request_voice(self, request: SynthesisRequest) -> dict:
        name = request.speaker
        if request.voice is None:
            raise Invalid("voice", f"{name!r} has no speaker entry in this model's spk2info.pt")
        voice = dict(request.voice)
        if "embedding" in voice:  # a built-in SFT speaker: an embedding, no prompt
            if request.mode is Mode.SFT:
                return voice
            raise Invalid(
                "voice",
                f"{name!r} is a built-in SFT speaker, which has no prompt; {MODE_LABELS[request.mode]} "
                f"on CosyVoice{self.generation} needs a voice with a prompt (a cloned voice or prompt audio)",
            )
        if request.mode is not Mode.INSTRUCT:
            return voice
        instruction = request.instruct_text
        if PROMPT_MARK not in instruction:  # upstream's documented forms of an instruction
            instruction = f"{V3_SYSTEM} {instruction}" if self.generation == 3 else instruction
            instruction += PROMPT_MARK
        # upstream's instruct2 takes the instruction from the cached voice's prompt text: put it there
        voice["prompt_text"], voice["prompt_text_len"] = self._model.frontend._extract_text_token(instruction)
        return voice

    def _texts(self, text: str, needs_mark: bool) -> list[str]:
        """The text as upstream will read it: normalised, one sentence (or a few) per piece."""
        head = ""
        if PROMPT_MARK in text:  # the caller wrote CosyVoice3's convention: keep their prompt on every piece
            head, text = text.split(PROMPT_MARK, 1)
            head += PROMPT_MARK
        elif needs_mark:
            head = V3_SYSTEM + PROMPT_MARK
        if self._text_frontend and not ("<|" in text and "|>" in text):
            pieces = self._model.frontend.text_normalize(text, split=True, text_frontend=True)
        else:  # upstream neither normalises nor splits text with tags (<|en|>, ...): split it here
            pieces = split_sentences(text) or [text]
        return [head + piece for piece in pieces]

    def _normalize(self, text: str) -> str:
        return self._model.frontend.text_normalize(text, split=False, text_frontend=self._text_frontend)

    def _utterance(self, request: SynthesisRequest, voice: dict, sft: bool, text: str) -> Utterance:
        """Upstream's frontend_sft / frontend_zero_shot / frontend_cross_lingual / frontend_instruct2 inputs."""
        tokens, _ = self._model.frontend._extract_text_token(text)
        empty = torch.zeros(1, 0, dtype=torch.int32)
        if sft:  # a built-in speaker: an embedding, no prompt
            return Utterance(LMInput(tokens, empty, empty), empty, torch.zeros(1, 0, 80), voice["embedding"])
        prompt_text, prompt_speech = voice["prompt_text"], voice["llm_prompt_speech_token"]
        if request.mode is Mode.CROSS_LINGUAL:  # the LLM gets neither the transcript nor the prompt's tokens
            prompt_text, prompt_speech = empty, empty
        elif request.mode is Mode.INSTRUCT:  # the instruction in place of the transcript, no prompt tokens
            prompt_speech = empty
        return self._flow_prompt(voice, LMInput(tokens, prompt_text, prompt_speech))

    @staticmethod
    def _flow_prompt(voice: dict, lm: LMInput) -> Utterance:
        return Utterance(lm, voice["flow_prompt_speech_token"], voice["prompt_speech_feat"], voice["flow_embedding"])

    def _run(
        self, request: SynthesisRequest, voice: dict, sft: bool, text: str, generators: Generators
    ) -> Iterator[np.ndarray]:
        stream = request.stream and request.speed == 1.0  # upstream applies speed only when not streaming
        cancelled = request.cancelled.is_set if request.cancelled is not None else bool
        utterance = self._utterance(request, voice, sft, text)
        try:
            yield from self.pipeline.speak(utterance, generators, stream, request.speed, cancelled)
        except LMFailure as exc:
            raise EngineFailure(None, f"the CosyVoice model failed while generating speech tokens ({exc})") from exc
