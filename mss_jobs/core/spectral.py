"""Pure spectral helpers: window functions, STFT and inverse STFT over (..., samples) waveforms."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from mss_jobs.domain.units import WINDOW_SHAPES, FftSize, HopLength, Samples, WindowShape
from mss_jobs.errors import ConfigError
from mss_jobs.types import ComplexSpectrogram, WindowTensor

__all__ = ["StftParams", "istft", "overlap_add_window", "stft", "stft_window"]


def _cosine_sum(phase: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """Generalized cosine window sum_k (-1)^k a_k cos(k * phase), phase in [0, 2π]."""
    out = torch.zeros_like(phase)
    for k, a in enumerate(coefficients):
        out += (-1) ** k * a * torch.cos(k * phase)
    return out


def _window_at(shape: WindowShape, position: torch.Tensor) -> torch.Tensor:
    """Evaluate a window at normalized positions in [0, 1] (0 and 1 are the window's edges)."""
    phase = 2.0 * math.pi * position
    if shape == "hann":
        return _cosine_sum(phase, (0.5, 0.5))
    if shape == "hamming":
        return _cosine_sum(phase, (0.54, 0.46))
    if shape == "blackman":
        return _cosine_sum(phase, (0.42, 0.5, 0.08))
    if shape == "bartlett":
        return 1.0 - torch.abs(2.0 * position - 1.0)
    if shape == "rectangular":
        return torch.ones_like(position)
    raise ConfigError(f"unknown window shape {shape!r}; expected one of {WINDOW_SHAPES}")


def stft_window(
    shape: WindowShape, size: FftSize, *, device: torch.device | None = None
) -> torch.Tensor:
    """Periodic (DFT-even) analysis window of `size` samples, the STFT convention."""
    position = torch.arange(size, dtype=torch.float64, device=device) / size
    return _window_at(shape, position).to(torch.float32)


def overlap_add_window(
    shape: WindowShape, size: int, *, device: torch.device | None = None
) -> WindowTensor:
    """Chunk weights for overlap-add stitching, strictly positive everywhere.

    Sampled at sample midpoints ((n + 0.5) / size) so no sample gets weight exactly zero, then
    floored at 1e-6 of the peak. The stitcher divides by the summed weights, so a sample that only
    one chunk covers (overlap 0, or the track edges) comes back exactly as that chunk predicted,
    whatever the shape: the hann-at-overlap-0 failure (0 / 0 at every chunk edge) cannot happen.
    """
    if size <= 0:
        raise ConfigError(f"window size must be positive, got {size=}")
    # A worker separates many tracks with the same chunk size: compute each window once.
    return WindowTensor(_overlap_add_window_cpu(shape, size).to(device).clone())


@functools.lru_cache(maxsize=16)
def _overlap_add_window_cpu(shape: WindowShape, size: int) -> torch.Tensor:
    position = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    window = _window_at(shape, position)
    return window.clamp_min(1e-6 * float(window.max())).to(torch.float32)


@dataclass(frozen=True, slots=True)
class StftParams:
    """STFT geometry. Perfect reconstruction needs the window's overlap-add to be nonzero
    (the NOLA condition), which holds for every shape here when hop <= n_fft / 2, and for
    rectangular at any hop <= n_fft."""

    n_fft: FftSize
    hop_length: HopLength
    window: WindowShape = "hann"

    def __post_init__(self) -> None:
        if self.n_fft < 2:
            raise ConfigError(f"n_fft must be at least 2, got {self.n_fft=}")
        limit = self.n_fft if self.window == "rectangular" else self.n_fft // 2
        if not 0 < self.hop_length <= limit:
            raise ConfigError(
                f"{self.hop_length=} must be in (0, {limit}] for a {self.window} window "
                f"of {self.n_fft=} (overlap-add of the window would vanish)"
            )

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1


def _pad_tail(flat: torch.Tensor, params: StftParams) -> torch.Tensor:
    """Zero-pad the end so the last sample lies no further than n_fft // 4 past a frame centre.

    torch.stft's centred frames sit at 0, hop, 2·hop, …, up to the signal's length; the last
    samples can fall in the outer quarter of the last frame (hop > n_fft / 4), where a tapered
    window's squared overlap-add is nearly zero and the inverse divides by it (errors up to 1e-2
    at hop = n_fft / 2), or past the last frame entirely (rectangular, hop > n_fft / 2 + 1: the
    inverse returns zeros there). One more frame whose centre is at or after the last sample
    fixes both; for hop <= n_fft / 4 it never triggers, so the frame count is unchanged there.
    """
    length, n_fft, hop = flat.shape[-1], params.n_fft, params.hop_length
    last_centre = ((length - n_fft % 2) // hop) * hop
    if length - 1 - last_centre <= n_fft // 4:
        return flat
    extra = math.ceil((length - 1) / hop) * hop + n_fft % 2 - length
    return torch.nn.functional.pad(flat, (0, max(extra, 0)))


def _framing(params: StftParams, device: torch.device) -> dict[str, Any]:
    """The frame geometry `stft` and `istft` share: the inverse must frame as the forward did."""
    return {
        "n_fft": params.n_fft,
        "hop_length": params.hop_length,
        "window": stft_window(params.window, params.n_fft, device=device),
        "center": True,
    }


def stft(waveform: torch.Tensor, params: StftParams) -> ComplexSpectrogram:
    """(..., samples) float → (..., bins, frames) complex64, centered frames (reflect padding
    when the signal allows it, zero padding for signals shorter than n_fft // 2 + 1)."""
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1]).to(torch.float32)
    pad_mode = "reflect" if flat.shape[-1] > params.n_fft // 2 else "constant"
    flat = _pad_tail(flat, params)
    spec = torch.stft(flat, **_framing(params, flat.device), pad_mode=pad_mode, return_complex=True)
    return ComplexSpectrogram(spec.reshape(*lead, *spec.shape[-2:]))


def istft(spectrogram: ComplexSpectrogram, params: StftParams, *, length: Samples) -> torch.Tensor:
    """(..., bins, frames) complex → (..., length) float32, the inverse of `stft`."""
    lead = spectrogram.shape[:-2]
    flat = spectrogram.reshape(-1, *spectrogram.shape[-2:])
    wave = torch.istft(flat, **_framing(params, flat.device), length=length)
    return wave.reshape(*lead, length)
