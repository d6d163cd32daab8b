"""Measure what the embedded engine can reproduce of a voice: pitch, pitch range, speaking rate."""

import re
from dataclasses import dataclass

import numpy as np

_FRAME, _HOP = 0.04, 0.01
_FMIN, _FMAX = 50.0, 500.0
_VOICED_CORRELATION = 0.5


@dataclass(frozen=True)
class Prosody:
    median_f0_hz: float
    range_semitones: float  # spread between the 10th and 90th percentile of F0
    syllables_per_second: float | None  # None without a transcript
    speech_seconds: float


def pitch_track(x: np.ndarray, rate: int) -> np.ndarray:
    """F0 in Hz of each voiced 40 ms frame (normalised autocorrelation, first strong peak)."""
    n, hop = int(_FRAME * rate), int(_HOP * rate)
    if x.size < n:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    frames = frames[energy > energy.max() * 0.05]
    if not len(frames):
        return np.zeros(0)
    spectrum = np.fft.rfft(frames, 2 * n, axis=1)
    corr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :n]
    corr /= np.maximum(corr[:, :1], 1e-12)
    lo, hi = int(rate / _FMAX), min(n - 2, int(rate / _FMIN))
    window = corr[:, lo : hi + 1]
    best = window.max(axis=1)
    # the first lag whose correlation is within 10 % of the best avoids octave-down errors
    is_peak = (window[:, 1:-1] >= window[:, :-2]) & (window[:, 1:-1] >= window[:, 2:])
    strong = is_peak & (window[:, 1:-1] >= 0.9 * best[:, None])
    has_peak = strong.any(axis=1) & (best > _VOICED_CORRELATION)
    lag = lo + 1 + np.argmax(strong, axis=1)
    rows = np.flatnonzero(has_peak)
    lag = lag[rows]
    left, mid, right = corr[rows, lag - 1], corr[rows, lag], corr[rows, lag + 1]
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    return rate / (lag + np.clip(shift, -0.5, 0.5))


def active_seconds(x: np.ndarray, rate: int) -> float:
    """Seconds of the signal louder than -35 dB below its loudest 10 ms (pauses left out)."""
    hop = int(0.01 * rate)
    usable = x[: x.size // hop * hop].reshape(-1, hop).astype(np.float64)
    if not len(usable):
        return 0.0
    rms = np.sqrt(np.mean(usable**2, axis=1))
    return float(np.count_nonzero(rms > rms.max() * 10 ** (-35 / 20)) * _HOP)


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_LATIN_WORD = re.compile(r"[A-Za-z']+")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")


def count_syllables(text: str) -> int:
    """CJK characters are one syllable each; a Latin word has one per vowel group (at least one)."""
    count = len(_CJK.findall(text)) + sum(ch.isdigit() for ch in text)
    for word in _LATIN_WORD.findall(text.lower()):
        count += max(1, len(_VOWEL_GROUP.findall(word)))
    return count


def measure(x: np.ndarray, rate: int, transcript: str = "") -> Prosody:
    f0 = pitch_track(x, rate)
    speech = active_seconds(x, rate)
    if f0.size:
        median = float(np.median(f0))
        p10, p90 = np.percentile(f0, [10, 90])
        spread = float(12 * np.log2(p90 / p10))
    else:
        median, spread = 0.0, 0.0
    syllables = count_syllables(transcript)
    rate_sps = syllables / speech if syllables and speech > 0 else None
    return Prosody(median, spread, rate_sps, speech)
