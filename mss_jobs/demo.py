"""Pure synthesis of a demo track with known sources: sustained chords plus a drum pattern.

No audio can be downloaded here, so the README's first command, the tests and the benchmarks
make their music: a chord progression of harmonic tones (the `harmonic` truth) and kick, snare
and hi-hat hits built from decaying noise and pitch-swept sines (the `percussive` truth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mss_jobs.domain.units import SampleRate
from mss_jobs.types import RawAudioTensor

__all__ = ["DemoTrack", "synthesize_chords_and_bursts", "synthesize_demo"]

# A I-V-vi-IV progression in C major, as MIDI notes.
_PROGRESSION = ((60, 64, 67), (55, 59, 62, 67), (57, 60, 64), (53, 57, 60, 65))


@dataclass(frozen=True, slots=True)
class DemoTrack:
    mixture: RawAudioTensor
    harmonic: RawAudioTensor
    percussive: RawAudioTensor
    sample_rate: SampleRate


def _midi_hz(note: int) -> float:
    return float(440.0 * 2.0 ** ((note - 69) / 12.0))


def _chords(samples: int, rate: int, *, bar_seconds: float, gen: torch.Generator) -> torch.Tensor:
    t = torch.arange(samples, dtype=torch.float64) / rate
    out = torch.zeros(2, samples, dtype=torch.float64)
    bar = int(bar_seconds * rate)
    for start in range(0, samples, bar):
        stop = min(start + bar, samples)
        seg = t[start:stop] - t[start]
        chord = _PROGRESSION[(start // bar) % len(_PROGRESSION)]
        envelope = (1 - torch.exp(-seg / 0.02)) * torch.exp(-seg / (bar_seconds * 2.5))
        for voice, note in enumerate(chord):
            pan = 0.3 + 0.4 * voice / max(len(chord) - 1, 1)
            phase = float(torch.rand(1, generator=gen)) * 2 * math.pi
            tone = torch.zeros_like(seg)
            for partial in range(1, 7):
                tone += (0.6**partial) * torch.sin(
                    2 * math.pi * _midi_hz(note) * partial * seg + phase * partial
                )
            out[0, start:stop] += (1 - pan) * tone * envelope
            out[1, start:stop] += pan * tone * envelope
    return out


def _drums(samples: int, rate: int, *, beat_seconds: float, gen: torch.Generator) -> torch.Tensor:
    out = torch.zeros(2, samples, dtype=torch.float64)
    beat = int(beat_seconds * rate)
    half = beat // 2
    for index, start in enumerate(range(0, samples, half)):
        length = min(int(0.25 * rate), samples - start)
        seg = torch.arange(length, dtype=torch.float64) / rate
        noise = torch.randn(2, length, generator=gen, dtype=torch.float64)
        if index % 4 == 0:  # kick: swept sine + click
            sweep = 2 * math.pi * (50 * seg + 60 * (1 - torch.exp(-seg / 0.03)) * 0.03)
            hit = 1.2 * torch.sin(sweep) * torch.exp(-seg / 0.08) + 0.3 * noise * torch.exp(
                -seg / 0.004
            )
        elif index % 4 == 2:  # snare: noise burst
            hit = 0.7 * noise * torch.exp(-seg / 0.05)
        else:  # hi-hat: short bright noise
            bright = noise - torch.roll(noise, 1, dims=-1)
            hit = 0.25 * bright * torch.exp(-seg / 0.015)
        out[:, start : start + length] += hit
    return out


def synthesize_demo(
    seconds: float = 20.0, *, sample_rate: SampleRate = 44100, seed: int = 0
) -> DemoTrack:
    """A stereo demo mix and its true harmonic and percussive sources, peak-normalized to -3 dB."""
    if seconds <= 0:
        raise ValueError(f"{seconds=} must be positive")
    gen = torch.Generator().manual_seed(seed)
    samples = max(1, round(seconds * sample_rate))
    harmonic = _chords(samples, sample_rate, bar_seconds=2.0, gen=gen)
    percussive = _drums(samples, sample_rate, beat_seconds=0.5, gen=gen)
    mixture = harmonic + percussive
    scale = 0.7 / float(mixture.abs().max().clamp_min(1e-9))
    return DemoTrack(
        mixture=RawAudioTensor((mixture * scale).float()),
        harmonic=RawAudioTensor((harmonic * scale).float()),
        percussive=RawAudioTensor((percussive * scale).float()),
        sample_rate=sample_rate,
    )


def synthesize_chords_and_bursts(
    seconds: float, *, channels: int = 2, seed: int = 0, sample_rate: SampleRate = 44100
) -> DemoTrack:
    """HPSS test material: sustained chords (0.5-1 s each, 8 partials, slow tremolo) and
    exponentially decaying white-noise bursts (~6 per second), each scaled to RMS 0.1."""
    if seconds <= 0:
        raise ValueError(f"{seconds=} must be positive")
    RATE = sample_rate  # noqa: N806
    gen = torch.Generator().manual_seed(seed)
    n = round(seconds * RATE)
    t = torch.arange(n, dtype=torch.float64) / RATE
    harmonic = torch.zeros(channels, n, dtype=torch.float64)
    start = 0
    while start < n:
        stop = min(n, start + round(RATE * (0.5 + 0.5 * torch.rand(1, generator=gen).item())))
        fade = min(round(0.04 * RATE), (stop - start) // 2)
        envelope = torch.ones(stop - start, dtype=torch.float64)
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, fade, dtype=torch.float64))
        envelope[:fade], envelope[len(envelope) - fade :] = ramp, ramp.flip(0)
        root = 45 + int(torch.randint(0, 24, (1,), generator=gen))
        for voice, interval in enumerate((0, 4, 7, 12)):
            f0 = 440.0 * 2 ** ((root + interval - 69) / 12)
            rate = 0.3 + torch.rand(1, generator=gen).item()
            amp = envelope * (0.8 + 0.2 * torch.sin(2 * math.pi * rate * t[start:stop]))
            for overtone in range(1, 9):
                phase = 2 * math.pi * torch.rand(1, generator=gen).item()
                tone = (
                    amp * torch.sin(2 * math.pi * f0 * overtone * t[start:stop] + phase) / overtone
                )
                for c in range(channels):
                    harmonic[c, start:stop] += (0.6 + 0.4 * ((c + voice) % 2)) * tone
        start = stop
    percussive = torch.zeros(channels, n, dtype=torch.float64)
    for _ in range(round(seconds * 6)):
        at = int(torch.randint(0, n, (1,), generator=gen))
        tau = (0.01 + 0.04 * torch.rand(1, generator=gen).item()) * RATE
        length = min(n - at, round(8 * tau))
        decay = torch.exp(-torch.arange(length, dtype=torch.float64) / tau)
        gain = 0.5 + torch.rand(1, generator=gen).item()
        noise = torch.randn(channels, length, generator=gen, dtype=torch.float64)
        percussive[:, at : at + length] += gain * decay * noise
    harmonic, percussive = (
        (s / s.pow(2).mean().sqrt().clamp_min(1e-12) * 0.1).float() for s in (harmonic, percussive)
    )
    return DemoTrack(
        mixture=RawAudioTensor(harmonic + percussive),
        harmonic=RawAudioTensor(harmonic),
        percussive=RawAudioTensor(percussive),
        sample_rate=sample_rate,
    )
