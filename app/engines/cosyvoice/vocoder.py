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
"""

import numpy as np
import torch
import torch.nn.functional as F

SAMPLES_PER_FRAME = 480  # 24 kHz, 50 mel frames per second
MARGIN = 64  # frames of mel vocoded again before each CosyVoice3 chunk (receptive field ~40)


def _nsf_source(hift, f0: torch.Tensor, generator: torch.Generator | None, start: int, phase=None):
    """SourceModuleHnNSF + SineGen2 for f0 (batch, 1, frames): the excitation (batch, 1, samples).

    Non-causal (CosyVoice2): upstream's draws, from ``generator``. Causal (CosyVoice3): ``phase`` gives the
    running phase sum per frame and ``start`` the first frame's absolute position.
    """
    module, sine = hift.m_source, hift.m_source.l_sin_gen
    f0 = hift.f0_upsamp(f0).transpose(1, 2)  # (batch, samples, 1)
    harmonics = torch.multiply(f0, torch.FloatTensor([[range(1, sine.harmonic_num + 2)]]).to(f0.device))
    rad = (harmonics / sine.sampling_rate) % 1
    if phase is None:
        initial = torch.rand(f0.shape[0], harmonics.shape[2], device=f0.device, generator=generator)
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
        offset = start * SAMPLES_PER_FRAME
        noise = noise_amp * sine.sine_waves[:, offset : offset + waves.shape[1]].to(waves.device)
    else:
        # randn_like fills in memory order, and waves is a transposed view: same draws, same places
        noise = noise_amp * torch.randn_like(waves, generator=generator)
        torch.randn_like(uv, generator=generator)  # upstream's noise branch, unused but drawn
    merged = module.l_tanh(module.l_linear(waves * uv + noise))
    return merged.transpose(1, 2)


def frame_rads(hift, f0: torch.Tensor) -> torch.Tensor:
    """Per frame (batch, frames, harmonics): the phase increment the causal SineGen2 sums, as it computes it."""
    sine = hift.m_source.l_sin_gen
    f0 = hift.f0_upsamp(f0).transpose(1, 2)
    harmonics = torch.multiply(f0, torch.FloatTensor([[range(1, sine.harmonic_num + 2)]]).to(f0.device))
    rad = (harmonics / sine.sampling_rate) % 1
    return F.interpolate(rad.transpose(1, 2), scale_factor=1 / sine.upsample_scale, mode="linear").transpose(1, 2)


class HiftV2:
    """One stream through CosyVoice2's HiFTGenerator, as upstream's ``CosyVoice2Model.token2wav``."""

    def __init__(self, hift, generator: torch.Generator | None):
        from cosyvoice.utils.common import fade_in_out

        self.hift, self.generator, self._fade = hift, generator, fade_in_out
        self.mel_cache = 8
        self.source_cache = self.mel_cache * SAMPLES_PER_FRAME
        self.window = np.hamming(2 * self.source_cache)
        self.cache: dict | None = None

    def _vocode(self, mel: torch.Tensor, cache_source: torch.Tensor):
        f0 = self.hift.f0_predictor(mel)
        source = _nsf_source(self.hift, f0[:, None], self.generator, 0)
        if cache_source.shape[2] != 0:
            source[:, :, : cache_source.shape[2]] = cache_source
        return self.hift.decode(x=mel, s=source), source

    @torch.inference_mode()
    def __call__(self, mel: torch.Tensor, finalize: bool, speed: float = 1.0) -> torch.Tensor:
        cache_source = torch.zeros(1, 1, 0, device=mel.device)
        if self.cache is not None:
            mel = torch.concat([self.cache["mel"], mel], dim=2)
            cache_source = self.cache["source"]
        if finalize and speed != 1.0:
            mel = F.interpolate(mel, size=int(mel.shape[2] / speed), mode="linear")
        speech, source = self._vocode(mel, cache_source)
        if self.cache is not None:
            speech = self._fade(speech, self.cache["speech"], self.window)
        if finalize:
            return speech
        self.cache = {
            "mel": mel[:, :, -self.mel_cache :],
            "source": source[:, :, -self.source_cache :],
            "speech": speech[:, -self.source_cache :],
        }
        return speech[:, : -self.source_cache]


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

    @torch.inference_mode()
    def __call__(self, mel: torch.Tensor, finalize: bool, speed: float = 1.0) -> torch.Tensor:
        if finalize and speed != 1.0:  # upstream: non-streaming only, over the whole utterance
            mel = F.interpolate(mel, size=int(mel.shape[2] / speed), mode="linear")
            speech, _ = self.hift.inference(speech_feat=mel, finalize=True)
            return speech
        self.mel = mel if self.mel is None else torch.concat([self.mel, mel], dim=2)
        total = self.first + self.mel.shape[2]
        start = max(self.first, self.sent - MARGIN)
        window = self.mel[:, :, start - self.first :]
        ready = total if finalize else total - self.lookahead  # frames whose F0 is known
        f0 = self.hift.f0_predictor(window.to(torch.float64), finalize=finalize).to(window)
        phase = self._phase(f0, start, ready)
        source = _nsf_source(self.hift, f0[:, None], None, start, phase)
        x = window if finalize else window[:, :, : -self.lookahead]
        speech = self.hift.decode(x=x, s=source, finalize=finalize)
        speech = speech[:, (self.sent - start) * SAMPLES_PER_FRAME :]
        self.sent = total if finalize else total - self.trimmed
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
