"""Measure recorded audio: the dominant tone (Goertzel filters) and how long it is not silent.

Pure Python (`wave` + `math`), so the tests need no numpy: a coarse search with short blocks
(~10 Hz resolution) finds the peak, a fine search over one second of steady tone refines it to
0.5 Hz. For an 8 kHz recording this is well under a second of CPU.
"""

from __future__ import annotations

import math
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Recording:
    rate: int
    samples: array  # type: ignore[type-arg]  # signed 16-bit, mono

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate


def read_wav(path: Path) -> Recording:
    """A 16-bit PCM WAV file as mono samples (the channels are averaged)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * wav.getsampwidth()}-bit samples, expected 16-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    samples = array("h", frames)
    if channels > 1:
        samples = array(
            "h",
            (sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)),
        )
    return Recording(rate, samples)


def goertzel_power(samples: array, rate: int, freq: float) -> float:  # type: ignore[type-arg]
    """The power of `samples` at `freq` Hz (one Goertzel filter, normalised by length²)."""
    coefficient = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    n = len(samples) or 1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / (n * n)


def frame_levels(rec: Recording, frame: float = 0.02) -> list[float]:
    """RMS level of each `frame`-second frame, in dBFS."""
    size = max(1, int(rec.rate * frame))
    levels = []
    for start in range(0, len(rec.samples) - size + 1, size):
        chunk = rec.samples[start : start + size]
        rms = math.sqrt(sum(x * x for x in chunk) / size)
        levels.append(20 * math.log10(rms / 32768) if rms > 0 else -120.0)
    return levels


def active_span(
    rec: Recording, threshold_dbfs: float = -40.0, frame: float = 0.02
) -> tuple[float, float]:
    """(first, last) second of audio louder than the threshold; (0, 0) when all is silent."""
    levels = frame_levels(rec, frame)
    loud = [i for i, level in enumerate(levels) if level > threshold_dbfs]
    if not loud:
        return 0.0, 0.0
    return loud[0] * frame, (loud[-1] + 1) * frame


def active_duration(rec: Recording, threshold_dbfs: float = -40.0, frame: float = 0.02) -> float:
    """Seconds of audio louder than the threshold (frames of `frame` s, counted one by one)."""
    return sum(frame for level in frame_levels(rec, frame) if level > threshold_dbfs)


def dominant_frequency(rec: Recording, low: float = 100.0, high: float | None = None) -> float:
    """The strongest tone in the loud part of the recording, in Hz (±0.5 Hz)."""
    high = high if high is not None else rec.rate / 2 - 100
    start, end = active_span(rec)
    if end <= start:
        raise ValueError("the recording is silent")
    first, last = int(start * rec.rate), int(end * rec.rate)
    # Skip the first 200 ms (jitter buffer start, resampler warm-up); take up to 1 s after it.
    begin = min(first + rec.rate // 5, max(first, last - rec.rate))
    window = rec.samples[begin : min(last, begin + rec.rate)]
    # coarse: blocks of 1/10 s have ~10 Hz wide bins; add up the power of a few blocks
    block = rec.rate // 10
    blocks = [window[i : i + block] for i in range(0, len(window) - block + 1, block)][:4]
    if not blocks:
        raise ValueError("too little loud audio to measure a tone")
    candidates = [low + 10.0 * i for i in range(int((high - low) / 10.0) + 1)]
    coarse = max(candidates, key=lambda f: sum(goertzel_power(b, rec.rate, f) for b in blocks))
    # fine: the whole window, 0.5 Hz steps around the coarse peak
    fine = [coarse - 10.0 + 0.5 * i for i in range(41)]
    return max(fine, key=lambda f: goertzel_power(window, rec.rate, f))


def tone_to_total_ratio(rec: Recording, freq: float) -> float:
    """The share of the loud audio's power that is at `freq`: ≈1 for a clean tone, low for
    noise or several tones (a sinusoid of amplitude A has power A²/2, its Goertzel power A²/4)."""
    start, end = active_span(rec)
    window = rec.samples[int(start * rec.rate) : int(end * rec.rate)][: rec.rate]
    total = sum(x * x for x in window) / (len(window) or 1)
    return 2 * goertzel_power(window, rec.rate, freq) / total if total else 0.0
