"""The seed's tensors: typed aliases over `torch.Tensor` shared by every room that holds audio.
No code lives here.

Each is a `NewType`; the line under it documents its shape and value domain. The rest of the
vocabulary (units such as `SampleRate`, `ChunkSize`, `OverlapRatio`, `WindowShape`) is torch-free
and lives in `mss_jobs.domain.units`, so the API can share it.
"""

from __future__ import annotations

from typing import NewType

import torch

# ---------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------

RawAudioTensor = NewType("RawAudioTensor", torch.Tensor)
"""(channels, samples) float32 waveform in its original level (roughly [-1, 1])."""

NormalizedAudioTensor = NewType("NormalizedAudioTensor", torch.Tensor)
"""(channels, samples) float32 waveform scaled to mean 0, std 1 by `NormalizationStats`."""

ComplexSpectrogram = NewType("ComplexSpectrogram", torch.Tensor)
"""(..., n_fft // 2 + 1 bins, frames) complex64 short-time Fourier transform."""

PaddedChunkedAudioTensor = NewType("PaddedChunkedAudioTensor", torch.Tensor)
"""(batch, channels, chunk_size) float waveform chunks, edge-padded; may be a strided view."""

SeparatedChunkedTensor = NewType("SeparatedChunkedTensor", torch.Tensor)
"""(batch, stems, channels, chunk_size) model output for a batch of chunks."""

RawSeparatedTensor = NewType("RawSeparatedTensor", torch.Tensor)
"""(stems, channels, samples) stitched waveform of every stem for a span of the track."""

WindowTensor = NewType("WindowTensor", torch.Tensor)
"""(chunk_size,) strictly positive float32 overlap-add weights for one chunk."""

__all__ = [
    "ComplexSpectrogram",
    "NormalizedAudioTensor",
    "PaddedChunkedAudioTensor",
    "RawAudioTensor",
    "RawSeparatedTensor",
    "SeparatedChunkedTensor",
    "WindowTensor",
]
