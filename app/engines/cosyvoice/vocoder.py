"""Mel to waveform with upstream's HiFT vocoders, chunk by chunk, each chunk costing the same.

CosyVoice2's ``HiFTGenerator`` is not causal; upstream streams it with a few cached mel frames, the cached
source signal and a cross-fade (``CosyVoice2Model.token2wav``): ``HiftV2`` is that algorithm. Upstream
draws its noise from the process-wide RNG, which its LLM thread draws from at the same time; here each
stream has a generator of its own, drawn from in the same order and shapes.

CosyVoice3's ``CausalHiFTGenerator`` is causal, and upstream re-vocodes every mel frame so far at every
chunk, keeping the new samples (O(k) per chunk). ``HiftV3`` vocodes a window: the new frames and
``MARGIN`` frames before them, more than the vocoder's receptive field (about 40 frames: the F0
predictor's 8, the source path's and the upsampling stages' residual blocks). What makes the window equal
the whole run: the sine source's phase is a running sum from the first frame (kept per frame, in double
precision as ``torch.cumsum`` accumulates it), and its noise is read by absolute sample position.

Streams side by side vocode together (``vocode``): the chunks of the same length, one per stream, run as one
batch through the vocoder's layers, each row with its own state, noise and phase; the rest alone.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SAMPLES_PER_FRAME = 480  # 24 kHz, 50 mel frames per second
MARGIN = 64  # frames of mel vocoded again before each CosyVoice3 chunk (receptive field ~40)


def _nsf_source(hift, f0: torch.Tensor, generators: list | None, starts: list[int], phase=None):
    """SourceModuleHnNSF + SineGen2 for f0 (batch, 1, frames): the excitation (batch, 1, samples).

    Non-causal (CosyVoice2): upstream's draws, each row's from its own generator. Causal (CosyVoice3):
    ``phase`` gives each row's running phase sum per frame and ``starts`` its first frame's absolute position.
    """
    module, sine = hift.m_source, hift.m_source.l_sin_gen
    generators = generators or [None] * f0.shape[0]  # None: the process-wide generator
    f0 = hift.f0_upsamp(f0).transpose(1, 2)  # (batch, samples, 1)
    harmonics = torch.multiply(f0, torch.FloatTensor([[range(1, sine.harmonic_num + 2)]]).to(f0.device))
    rad = (harmonics / sine.sampling_rate) % 1
    if phase is None:
        shape = (1, harmonics.shape[2])
        initial = torch.cat([torch.rand(shape, device=f0.device, generator=g) for g in generators])
        initial[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + initial
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / sine.upsample_scale, mode="linear").transpose(1, 2)
        angle = torch.cumsum(rad, dim=1) * 2 * np.pi
    else:
        angle = phase * 2 * np.pi
    causal = getattr(sine, "causal", False)  # the June 2025 code has no causal SineGen2
    mode = "nearest" if causal else "linear"
    angle = F.interpolate(angle.transpose(1, 2) * sine.upsample_scale, scale_factor=sine.upsample_scale, mode=mode)
    waves = torch.sin(angle.transpose(1, 2)) * sine.sine_amp
    uv = (f0 > sine.voiced_threshold).type(torch.float32)
    noise_amp = uv * sine.noise_std + (1 - uv) * sine.sine_amp / 3
    if causal:
        samples = waves.shape[1]
        read = [sine.sine_waves[:, s * SAMPLES_PER_FRAME : s * SAMPLES_PER_FRAME + samples] for s in starts]
        noise = noise_amp * torch.cat(read).to(waves.device)
    else:
        # randn_like fills in memory order, and waves is a transposed view: same draws, same places
        draws = []
        for row, generator in enumerate(generators):
            draws.append(torch.randn_like(waves[row : row + 1], generator=generator))
            torch.randn_like(uv[row : row + 1], generator=generator)  # upstream's noise branch, unused but drawn
        noise = noise_amp * torch.cat(draws)
    merged = module.l_tanh(module.l_linear(waves * uv + noise))
    return merged.transpose(1, 2)


def frame_rads(hift, f0: torch.Tensor) -> torch.Tensor:
    """Per frame (batch, frames, harmonics): the phase increment the causal SineGen2 sums, as it computes it."""
    sine = hift.m_source.l_sin_gen
    f0 = hift.f0_upsamp(f0).transpose(1, 2)
    harmonics = torch.multiply(f0, torch.FloatTensor([[range(1, sine.harmonic_num + 2)]]).to(f0.device))
    rad = (harmonics / sine.sampling_rate) % 1
    return F.interpolate(rad.transpose(1, 2), scale_factor=1 / sine.upsample_scale, mode="linear").transpose(1, 2)


@dataclass
class VocoderJob:
    """One stream's chunk of mel for its vocoder: what ``vocode`` takes from each stream."""

    stream: "HiftV2 | HiftV3"
    mel: torch.Tensor  # (1, 80, frames)
    finalize: bool
    speed: float = 1.0


@torch.inference_mode()
def vocode(jobs: list[VocoderJob], observe=None) -> list[torch.Tensor | Exception]:
    """Each job's audio (1, samples), in order: jobs whose inputs have the same shape run as one batch (each
    batch told to ``observe("vocoder", its size, seconds)``). A job or a batch that fails gets its exception in
    place of its audio; the others go on."""
    audio: list[torch.Tensor | Exception | None] = [None] * len(jobs)
    groups: dict[tuple, list] = {}
    for index, job in enumerate(jobs):
        try:
            step = job.stream.begin(job.mel, job.finalize, job.speed)
        except Exception as exc:  # noqa: BLE001 - this stream's failure, not the others'
            audio[index] = exc
            continue
        groups.setdefault((type(job.stream), *step.key), []).append((index, job.stream, step))
    for members in groups.values():
        streams, steps = [m[1] for m in members], [m[2] for m in members]
        started = time.perf_counter()
        try:
            speeches = type(streams[0]).run(streams, steps)
        except Exception as exc:  # noqa: BLE001 - these streams' failure, not the other groups'
            for index, _, _ in members:
                audio[index] = exc
            continue
        for (index, stream, step), speech in zip(members, speeches, strict=True):
            try:
                audio[index] = stream.end(step, speech)
            except Exception as exc:  # noqa: BLE001 - this stream's failure, not the others'
                audio[index] = exc
        if observe is not None:
            observe("vocoder", len(members), time.perf_counter() - started)
    return audio


def vocode_one(job: VocoderJob) -> torch.Tensor:
    (audio,) = vocode([job])
    if isinstance(audio, Exception):
        raise audio
    return audio


@dataclass
class _V2Step:
    mel: torch.Tensor  # the cached frames and the chunk's
    cache_source: torch.Tensor
    finalize: bool
    source: torch.Tensor | None = None

    @property
    def key(self) -> tuple:
        return (self.mel.shape[2],)  # each row's cached source is set in run


class HiftV2:
    """One stream through CosyVoice2's HiFTGenerator, as upstream's ``CosyVoice2Model.token2wav``."""

    def __init__(self, hift, generator: torch.Generator | None):
        from cosyvoice.utils.common import fade_in_out

        self.hift, self.generator, self._fade = hift, generator, fade_in_out
        self.mel_cache = 8
        self.source_cache = self.mel_cache * SAMPLES_PER_FRAME
        self.window = np.hamming(2 * self.source_cache)
        self.cache: dict | None = None

    def __call__(self, mel: torch.Tensor, finalize: bool, speed: float = 1.0) -> torch.Tensor:
        return vocode_one(VocoderJob(self, mel, finalize, speed))

    def begin(self, mel: torch.Tensor, finalize: bool, speed: float) -> _V2Step:
        cache_source = torch.zeros(1, 1, 0, device=mel.device)
        if self.cache is not None:
            mel = torch.concat([self.cache["mel"], mel], dim=2)
            cache_source = self.cache["source"]
        if finalize and speed != 1.0:
            mel = F.interpolate(mel, size=int(mel.shape[2] / speed), mode="linear")
        return _V2Step(mel, cache_source, finalize)

    @staticmethod
    def run(streams: list["HiftV2"], steps: list[_V2Step]) -> list[torch.Tensor]:
        hift = streams[0].hift
        mel = torch.cat([step.mel for step in steps])
        f0 = hift.f0_predictor(mel)
        source = _nsf_source(hift, f0[:, None], [stream.generator for stream in streams], [])
        for row, step in enumerate(steps):
            cached = step.cache_source.shape[2]
            if cached:
                source[row : row + 1, :, :cached] = step.cache_source
            step.source = source[row : row + 1]
        return list(hift.decode(x=mel, s=source).split(1))

    def end(self, step: _V2Step, speech: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            speech = self._fade(speech, self.cache["speech"], self.window)
        if step.finalize:
            return speech
        self.cache = {  # copies: not views holding the whole batch
            "mel": step.mel[:, :, -self.mel_cache :].clone(),
            "source": step.source[:, :, -self.source_cache :].clone(),
            "speech": speech[:, -self.source_cache :].clone(),
        }
        return speech[:, : -self.source_cache]


@dataclass
class _V3Step:
    window: torch.Tensor  # the frames vocoded: MARGIN before the audio sent, and the new ones
    start: int  # the window's first frame
    total: int  # frames of mel so far
    finalize: bool
    whole: torch.Tensor | None = None  # speed changed: upstream's non-streaming pass over it, alone

    @property
    def key(self) -> tuple:
        return (id(self),) if self.whole is not None else (self.window.shape[2], self.finalize)


class HiftV3:
    """One stream through CosyVoice3's CausalHiFTGenerator; each chunk vocodes MARGIN + new frames."""

    def __init__(self, hift):
        self.hift = hift
        hift.f0_predictor.to(torch.float64)  # as upstream's inference does: its precision matters when causal
        self.lookahead = hift.f0_predictor.condnet[0].causal_padding  # the F0 predictor reads ahead
        self.trimmed = self.lookahead + hift.conv_pre_look_right + 1  # frames a chunk's output stops short of
        # the next window starts MARGIN frames before the audio sent, which stops look_right + 1 short of the
        # frames summed: keep the sums from there
        self.kept_sums = MARGIN + hift.conv_pre_look_right + 1
        self.mel: torch.Tensor | None = None  # the last frames of mel (window material)
        self.first = 0  # absolute index of self.mel's first frame
        self.sent = 0  # frames of audio sent
        self.sums: torch.Tensor | None = None  # running phase sums per frame, double precision (last rows)
        self.summed = 0  # frames whose phase increments are summed (the last kept_sums kept)

    def __call__(self, mel: torch.Tensor, finalize: bool, speed: float = 1.0) -> torch.Tensor:
        return vocode_one(VocoderJob(self, mel, finalize, speed))

    def begin(self, mel: torch.Tensor, finalize: bool, speed: float) -> _V3Step:
        if finalize and speed != 1.0:  # upstream: non-streaming only, over the whole utterance
            whole = F.interpolate(mel, size=int(mel.shape[2] / speed), mode="linear")
            return _V3Step(whole, 0, 0, True, whole=whole)
        self.mel = mel.clone() if self.mel is None else torch.concat([self.mel, mel], dim=2)  # not a view of a batch
        total = self.first + self.mel.shape[2]
        start = max(self.first, self.sent - MARGIN)
        return _V3Step(self.mel[:, :, start - self.first :], start, total, finalize)

    @staticmethod
    def run(streams: list["HiftV3"], steps: list[_V3Step]) -> list[torch.Tensor]:
        hift, first = streams[0].hift, steps[0]
        if first.whole is not None:
            return [hift.inference(speech_feat=first.whole, finalize=True)[0]]
        lookahead, finalize = streams[0].lookahead, first.finalize
        window = torch.cat([step.window for step in steps])
        f0 = hift.f0_predictor(window.to(torch.float64), finalize=finalize).to(window)
        phases = []
        for row, (stream, step) in enumerate(zip(streams, steps, strict=True)):
            ready = step.total if finalize else step.total - lookahead  # frames whose F0 is known
            phases.append(stream._phase(f0[row : row + 1], step.start, ready))
        source = _nsf_source(hift, f0[:, None], None, [step.start for step in steps], torch.cat(phases))
        x = window if finalize else window[:, :, :-lookahead]
        return list(hift.decode(x=x, s=source, finalize=finalize).split(1))

    def end(self, step: _V3Step, speech: torch.Tensor) -> torch.Tensor:
        if step.whole is not None:
            return speech
        speech = speech[:, (self.sent - step.start) * SAMPLES_PER_FRAME :]
        self.sent = step.total if step.finalize else step.total - self.trimmed
        keep = max(0, self.sent - MARGIN - self.first)
        self.mel, self.first = self.mel[:, :, keep:], self.first + keep
        return speech

    def _phase(self, f0: torch.Tensor, start: int, ready: int) -> torch.Tensor:
        """The running phase sum (in cycles) at each window frame: kept sums, then new increments added on."""
        rads = frame_rads(self.hift, f0[:, None])  # (1, window frames, harmonics)
        new = rads[:, self.summed - start : ready - start].to(torch.float64)
        kept = self.sums if self.sums is not None else new[:, :0]
        carried = kept[:, -1:] if kept.shape[1] else torch.zeros_like(new[:, :1])
        added = torch.cumsum(torch.cat([carried, new], dim=1), dim=1)[:, 1:]
        sums = torch.cat([kept, added], dim=1)
        phase = sums[:, start - (ready - sums.shape[1]) :]
        self.sums, self.summed = sums[:, -self.kept_sums :], ready
        return phase.to(rads.dtype)
