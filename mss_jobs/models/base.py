"""The Separator protocol: what the pipeline needs from any model, DSP or neural.

A separator turns a batch of waveform chunks into a batch of per-stem waveform chunks of the same
length. Spectral models do their own STFT → mask → iSTFT inside `separate` (with the helpers in
`mss_jobs.core.spectral`), so the pipeline stays domain-agnostic and a neural model can fuse the
whole chunk path on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from mss_jobs.domain.units import (
    BatchSize,
    Channels,
    OverlapRatio,
    SampleRate,
    Seconds,
    StemName,
    WindowShape,
)
from mss_jobs.types import PaddedChunkedAudioTensor, SeparatedChunkedTensor

__all__ = ["ChunkDefaults", "Separator"]


@dataclass(frozen=True, slots=True)
class ChunkDefaults:
    """A model's preferred chunking; every field can be overridden per request."""

    chunk_seconds: Seconds
    overlap: OverlapRatio
    window: WindowShape = "hann"
    batch_size: BatchSize = 4
    normalize: bool = True
    """Whether the pipeline standardizes the mixture (mean 0, std 1) before the model."""


@runtime_checkable
class Separator(Protocol):
    """A source separation model as the pipeline sees it.

    Contract for `separate(chunks)`:
    - input `(batch, channels, chunk_size)` float tensor on `device`, possibly a strided view;
      `channels` equals `self.channels` when that is not None (the pipeline adapts mono and
      multichannel audio before calling);
    - output `(batch, len(stems), channels, chunk_size)` float32, same device;
    - no state carried between calls, so chunks may arrive in any batch size;
    - runs under `torch.inference_mode()` (the pipeline enters it).
    """

    @property
    def name(self) -> str: ...

    @property
    def sample_rate(self) -> SampleRate:
        """Rate the model runs at; the edges resample to and from it."""
        ...

    @property
    def channels(self) -> Channels | None:
        """Channels the model expects per chunk, or None when it takes any count."""
        ...

    @property
    def stems(self) -> tuple[StemName, ...]:
        """Names of the stems `separate` returns, in output order."""
        ...

    @property
    def chunk_defaults(self) -> ChunkDefaults: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (float32, or float16/bfloat16 for autocast on CUDA)."""
        ...

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Separator:
        """Move to `device` (and compute dtype); returns the moved separator."""
        ...

    def separate(self, chunks: PaddedChunkedAudioTensor) -> SeparatedChunkedTensor: ...
