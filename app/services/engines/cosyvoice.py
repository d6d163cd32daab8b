"""CosyVoice engine: an adapter over the real upstream classes (CosyVoice2 / CosyVoice3).

One adapter for both API generations (``prompt_speech_16k`` tensors before Dec 2025, ``prompt_wav``
paths after) and both model generations, told apart by the model dir (``cosyvoice2.yaml`` /
``cosyvoice3.yaml``) and by inspecting the installed code, never by version strings. Upstream's
pitfalls are worked around here, not by patching site-packages:

- voices are passed to upstream as a fresh copy under a per-request key, because its frontend
  mutates cached speaker dicts (and reads the instruction from the cached prompt in instruct2);
- model steps run under one lock, with each request's ``token_hop_len`` swapped in and out, so one
  stream's growing hop never leaks into the next request;
- when a consumer stops early, the request's LLM thread is stopped and upstream's per-request
  state is dropped;
- a missing model dir is a startup error (upstream would try to download it).
"""

import contextlib
import inspect
import logging
import os
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from app.errors import InvalidInput
from app.services.audio import PROMPT_RATE, wav_bytes
from app.services.engines.base import Mode, SynthesisRequest, VoiceRejected
from app.services.text import split_sentences

log = logging.getLogger(__name__)

_V3_PROMPT_MARK = "<|endofprompt|>"
_V3_DEFAULT_SYSTEM = "You are a helpful assistant."
# keys of a zero-shot voice in upstream's spk2info.pt (what add_zero_shot_spk stores)
ZERO_SHOT_KEYS = (
    "prompt_text",
    "prompt_text_len",
    "llm_prompt_speech_token",
    "llm_prompt_speech_token_len",
    "flow_prompt_speech_token",
    "flow_prompt_speech_token_len",
    "prompt_speech_feat",
    "prompt_speech_feat_len",
    "llm_embedding",
    "flow_embedding",
)

GET_WEIGHTS = (
    "download a model on a machine with internet access (pretrained_models/README.md says how) "
    "and copy it there, or point COSYVOICE_MODEL_DIR at it"
)


class EngineStartError(RuntimeError):
    """The CosyVoice engine cannot start; the message says what to do."""


class _StopSynthesis(Exception):
    """Raised inside upstream's LLM thread to end a request nobody listens to any more."""


class _StopOnAppend(list):
    """Replaces a request's token list: the LLM thread's next token removes it and stops the thread."""

    def __init__(self, table: dict, key: str):
        super().__init__()
        self._table, self._key = table, key

    def append(self, _item) -> None:
        self._table.pop(self._key, None)
        raise _StopSynthesis


def _quiet_stops(args) -> None:
    """Silence our own stops; when upstream's LLM thread dies of anything else, mark its request ended,
    or upstream's streaming loop would wait for more tokens forever."""
    if args.exc_type is _StopSynthesis:
        return
    tb = args.exc_traceback
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "llm_job" and "uuid" in frame.f_locals:
            model, session = frame.f_locals.get("self"), frame.f_locals["uuid"]
            with model.lock:
                if session in model.llm_end_dict:
                    model.llm_end_dict[session] = True
            break
        tb = tb.tb_next
    _default_excepthook(args)


_default_excepthook = threading.excepthook
threading.excepthook = _quiet_stops


def model_generation(model_dir: Path) -> int:
    for generation, name in ((3, "cosyvoice3.yaml"), (2, "cosyvoice2.yaml")):
        if (model_dir / name).is_file():
            return generation
    if (model_dir / "cosyvoice.yaml").is_file():
        raise EngineStartError(f"{model_dir} holds a CosyVoice-300M model; this service runs CosyVoice2 and 3")
    raise EngineStartError(f"no CosyVoice model in {model_dir} (no cosyvoice2.yaml or cosyvoice3.yaml); {GET_WEIGHTS}")


class _WetextNormalizer:
    """Upstream's ``tn`` (WeTextProcessing) normaliser interface, backed by the small ``wetext`` runtime."""

    language = "zh"

    def __init__(self, remove_erhua: bool = False, full_to_half: bool = False, **_ignored):
        from wetext import Normalizer

        options = {"remove_erhua": remove_erhua, "full_to_half": full_to_half} if self.language == "zh" else {}
        self._normalizer = Normalizer(lang=self.language, operator="tn", **options)

    def normalize(self, text: str) -> str:
        return self._normalizer.normalize(text)


class _EnglishWetextNormalizer(_WetextNormalizer):
    language = "en"


def _provide_text_normalisers() -> None:
    """Upstream's frontend imports ``tn`` (WeTextProcessing + pynini, ~670 MB) unless ``ttsfrd`` is there.

    When neither is installed, offer the same two classes backed by ``wetext`` (kaldifst, ~45 MB), the
    runtime newer upstream uses, as modules in ``sys.modules``; nothing in site-packages changes.
    """
    for name in ("ttsfrd", "tn.chinese.normalizer"):
        try:
            __import__(name)
            return
        except ImportError:
            pass
    modules = {name: types.ModuleType(name) for name in ("tn", "tn.chinese", "tn.english")}
    modules["tn.chinese.normalizer"] = types.ModuleType("tn.chinese.normalizer")
    modules["tn.english.normalizer"] = types.ModuleType("tn.english.normalizer")
    for package in ("tn", "tn.chinese", "tn.english"):
        modules[package].__path__ = []
    modules["tn.chinese.normalizer"].Normalizer = _WetextNormalizer
    modules["tn.english.normalizer"].Normalizer = _EnglishWetextNormalizer
    sys.modules.update(modules)


def _import_upstream(source: Path | None):
    """The upstream ``cosyvoice.cli.cosyvoice`` module: from a checkout (COSYVOICE_SRC) or installed."""
    if source is not None:
        if not (source / "cosyvoice" / "cli" / "cosyvoice.py").is_file():
            raise EngineStartError(
                f"COSYVOICE_SRC={source} is not a CosyVoice checkout (no cosyvoice/cli/cosyvoice.py)"
            )
        for path in (source / "third_party" / "Matcha-TTS", source):
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
    _provide_text_normalisers()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import cosyvoice.cli.cosyvoice as upstream
        from cosyvoice.utils.common import set_all_random_seed
    except ImportError as exc:
        raise EngineStartError(
            f"the upstream CosyVoice code is not importable ({exc}); run `make install-cosyvoice` "
            "or set COSYVOICE_SRC to a checkout of FunAudioLLM/CosyVoice"
        ) from exc
    finally:  # upstream configures the root logger (DEBUG) when imported: keep the service's
        root.setLevel(level)
        root.handlers[:] = handlers
    return upstream, set_all_random_seed


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
    ):
        if not model_dir.is_dir():
            raise EngineStartError(f"the model dir {model_dir} does not exist; {GET_WEIGHTS}")
        self.generation = model_generation(model_dir)
        upstream, self._seed_all = _import_upstream(source)
        cls = getattr(upstream, f"CosyVoice{self.generation}", None)
        if cls is None:
            raise EngineStartError(
                f"{model_dir} is a CosyVoice{self.generation} model but the installed upstream code has no "
                f"CosyVoice{self.generation} class; set COSYVOICE_SRC to a current checkout of FunAudioLLM/CosyVoice"
            )
        wanted = {"load_jit": load_jit, "load_trt": load_trt, "load_vllm": load_vllm, "fp16": fp16, "final": True}
        accepted = inspect.signature(cls.__init__).parameters
        self._model = cls(str(model_dir), **{k: v for k, v in wanted.items() if k in accepted})
        self.sample_rate = int(self._model.sample_rate)
        # Dec 2025 upstream takes prompt_wav (a path); before, prompt_speech_16k (a 16 kHz tensor)
        self._takes_paths = "prompt_wav" in inspect.signature(cls.inference_zero_shot).parameters
        self._text_frontend = text_frontend
        self._lock = threading.RLock()
        self._initial_hop = getattr(self._model.model, "token_hop_len", None)
        flow = self._model.model.flow
        # a voice file made for another model has other sizes: check them before upstream trips on them
        self._embed_dim = flow.spk_embed_affine_layer.in_features
        self._mel_bins = flow.output_size
        self._text_vocab = len(self._model.frontend.tokenizer.tokenizer)
        self._speech_vocab = int(self._model.model.llm.speech_token_size)
        stored = self._model.frontend.spk2info
        self._builtins = [k for k, v in stored.items() if isinstance(v, dict) and "embedding" in v]
        log.info(
            "CosyVoice%d loaded from %s (%s API, %d Hz, built-in speakers: %s)",
            self.generation,
            model_dir,
            "prompt_wav" if self._takes_paths else "prompt_speech_16k",
            self.sample_rate,
            ", ".join(self._builtins) or "none",
        )

    # -- voices ---------------------------------------------------------------------------
    def builtin_speakers(self) -> list[str]:
        return list(self._builtins)

    def make_voice(self, prompt_text: str, prompt_16k: np.ndarray) -> dict:
        """A zero-shot voice in upstream's exact spk2info format, made by upstream's add_zero_shot_spk."""
        key = f"__new_{threading.get_ident()}_{id(prompt_16k)}"
        with self._prompt(prompt_16k) as prompt, self._lock:
            try:
                self._model.add_zero_shot_spk(self._prompt_text(prompt_text), prompt, key)
            except AssertionError as exc:  # upstream asserts on prompts it cannot use
                raise VoiceRejected(str(exc) or "the model cannot use this prompt") from exc
            return self._model.frontend.spk2info.pop(key)

    def voice_problem(self, profile: object) -> str | None:
        if not isinstance(profile, dict):
            return "not a speaker entry (a dict)"
        if "embedding" in profile:  # a built-in SFT speaker
            return _tensor_problem(profile, "embedding", 2, self._embed_dim)
        missing = [key for key in ZERO_SHOT_KEYS if key not in profile]
        if missing:
            return f"not a CosyVoice speaker entry (missing {', '.join(missing)})"
        for key, dims, size in (
            ("llm_embedding", 2, self._embed_dim),
            ("flow_embedding", 2, self._embed_dim),
            ("prompt_speech_feat", 3, self._mel_bins),
        ):
            problem = _tensor_problem(profile, key, dims, size)
            if problem:
                return problem
        for key, vocab in (
            ("prompt_text", self._text_vocab),
            ("llm_prompt_speech_token", self._speech_vocab),
            ("flow_prompt_speech_token", self._speech_vocab),
        ):
            problem = _token_problem(profile, key, vocab)
            if problem:
                return problem
        return None

    def describe_voice(self, profile: dict) -> dict:
        if "embedding" in profile:
            return {"kind": "sft"}
        tokens = int(profile["flow_prompt_speech_token"].shape[1])
        return {"kind": "zero_shot", "prompt_tokens": tokens, "prompt_seconds": round(tokens / 25, 2)}

    # -- synthesis ------------------------------------------------------------------------
    def synthesize(self, request: SynthesisRequest) -> Iterator[np.ndarray]:
        if request.voice is None:
            raise InvalidInput(f"spk_id: {request.speaker!r} has no speaker entry in this model's spk2info.pt")
        voice = dict(request.voice)
        sft = "embedding" in voice
        if request.mode is Mode.INSTRUCT:
            if sft:
                raise InvalidInput(
                    f"spk_id: {request.speaker!r} is a built-in SFT speaker; 自然语言控制 on "
                    f"CosyVoice{self.generation} needs a voice with a prompt (a cloned voice or prompt audio)"
                )
            instruction = request.instruct_text
            if self.generation == 3 and _V3_PROMPT_MARK not in instruction:
                instruction = f"{_V3_DEFAULT_SYSTEM} {instruction}{_V3_PROMPT_MARK}"
            elif self.generation == 2:
                instruction += _V3_PROMPT_MARK
            # older upstream reads instruct2's instruction from the cached prompt: put it there
            tokens = self._model.frontend._extract_text_token(instruction)
            voice["prompt_text"], voice["prompt_text_len"] = tokens
        # upstream's text frontend splits long text itself; without it, split here so long text still streams
        pieces = [request.text] if self._text_frontend else split_sentences(request.text) or [request.text]
        for piece in pieces:
            yield from self._run(request, voice, sft, piece)

    def _run(self, request: SynthesisRequest, voice: dict, sft: bool, text: str) -> Iterator[np.ndarray]:
        key = f"__req_{threading.get_ident()}_{id(voice)}"
        stream = request.stream and request.speed == 1.0  # upstream applies speed only when not streaming
        options = {"stream": stream, "speed": request.speed, "text_frontend": self._text_frontend}
        unused_prompt = "" if self._takes_paths else torch.zeros(1, 0)
        model, spk2info = self._model, self._model.frontend.spk2info
        if request.mode is Mode.SFT and sft:
            generator = model.inference_sft(text, key, **options)
        elif request.mode is Mode.CROSS_LINGUAL:
            generator = model.inference_cross_lingual(text, unused_prompt, zero_shot_spk_id=key, **options)
        elif request.mode is Mode.INSTRUCT:
            generator = model.inference_instruct2(
                text, request.instruct_text, unused_prompt, zero_shot_spk_id=key, **options
            )
        else:  # zero-shot, and a cloned voice asked for as a "pretrained" speaker
            generator = model.inference_zero_shot(text, "", unused_prompt, zero_shot_spk_id=key, **options)
        hop, session = self._initial_hop, None
        try:
            with self._lock:
                self._seed_all(request.seed)
            while True:
                with self._lock:
                    spk2info[key] = _fresh(voice)  # upstream mutates what it reads
                    before = set(model.model.tts_speech_token_dict)
                    if hop is not None:
                        model.model.token_hop_len = hop
                    try:
                        output = next(generator, None)
                    finally:
                        if hop is not None:
                            hop = model.model.token_hop_len
                            model.model.token_hop_len = self._initial_hop
                    session = next(iter(set(model.model.tts_speech_token_dict) - before), session)
                if output is None:
                    return
                yield output["tts_speech"].reshape(-1).numpy().astype(np.float32, copy=False)
        finally:
            generator.close()
            with self._lock:
                spk2info.pop(key, None)
            self._stop(session)

    def _stop(self, session: str | None) -> None:
        """End an abandoned request's LLM thread and drop upstream's state for it."""
        model = self._model.model
        if session is None:
            return
        with model.lock:
            finished = model.llm_end_dict.pop(session, True)
            model.hift_cache_dict.pop(session, None)
            for name in ("mel_overlap_dict", "flow_cache_dict"):
                getattr(model, name, {}).pop(session, None)
            if session in model.tts_speech_token_dict:
                if finished:
                    model.tts_speech_token_dict.pop(session)
                else:
                    model.tts_speech_token_dict[session] = _StopOnAppend(model.tts_speech_token_dict, session)

    # -- helpers --------------------------------------------------------------------------
    def _prompt_text(self, text: str) -> str:
        if self.generation == 3 and _V3_PROMPT_MARK not in text:
            return f"{_V3_DEFAULT_SYSTEM}{_V3_PROMPT_MARK}{text}"
        return text

    def _prompt(self, prompt_16k: np.ndarray):
        """The prompt as this upstream wants it: a (1, N) tensor, or a temp WAV path (removed after)."""
        if self._takes_paths:
            return _prompt_file(prompt_16k)
        return contextlib.nullcontext(torch.from_numpy(np.ascontiguousarray(prompt_16k, dtype=np.float32))[None])


@contextlib.contextmanager
def _prompt_file(samples: np.ndarray):
    """The prompt as a temporary 16 kHz WAV file, removed on every path."""
    fd, path = tempfile.mkstemp(suffix=".wav", prefix="cosyvoice-prompt-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(wav_bytes(samples, PROMPT_RATE))
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def _fresh(entry: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in entry.items()}


def _token_problem(profile: dict, key: str, vocab: int) -> str | None:
    """Token ids: (1, N) integers within the vocabulary, with ``{key}_len`` equal to N."""
    value, length = profile.get(key), profile.get(f"{key}_len")
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] != 1 or value.is_floating_point():
        return f"{key} must be a (1, N) integer tensor"
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= vocab):
        return f"{key} holds ids outside this model's vocabulary of {vocab} (made for another model?)"
    if not isinstance(length, torch.Tensor) or length.numel() != 1 or int(length.reshape(-1)[0]) != value.shape[1]:
        return f"{key}_len must be one number equal to the length of {key}"
    return None


def _tensor_problem(profile: dict, key: str, dims: int, last: int) -> str | None:
    value = profile.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != dims or value.dtype != torch.float32:
        return f"{key} must be a {dims}-D float32 tensor"
    if value.shape[0] != 1:
        return f"{key} must hold one row (one speaker), not {value.shape[0]}"
    if value.shape[-1] != last:
        return f"{key} has {value.shape[-1]} values per row; this model expects {last} (made for another model?)"
    return None
