"""The `identity` separator: one stem, `mixture`, equal to the input.

It costs nothing, so running it through the pipeline measures the pipeline's own overhead
(decode, chunk, stitch, encode), and its output must equal its input, which makes it the
pipeline's correctness oracle in tests.
"""

from __future__ import annotations

import torch

from mss_jobs.domain.units import MIXTURE, Channels, SampleRate, StemName
from mss_jobs.models.base import ChunkDefaults
from mss_jobs.types import PaddedChunkedAudioTensor, SeparatedChunkedTensor

__all__ = ["IdentitySeparator"]


class IdentitySeparator:
    """Returns every chunk unchanged as the single stem `mixture`."""

    name = "identity"
    stems: tuple[StemName, ...] = (MIXTURE,)
    channels: Channels | None = None
    chunk_defaults = ChunkDefaults(chunk_seconds=8.0, overlap=0.5, window="hann", batch_size=8)

    def __init__(
        self,
        *,
        sample_rate: SampleRate = 44100,
        device: torch.device | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.device = device or torch.device("cpu")
        self.dtype = torch.float32

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> IdentitySeparator:
        return IdentitySeparator(sample_rate=self.sample_rate, device=device)

    def separate(self, chunks: PaddedChunkedAudioTensor) -> SeparatedChunkedTensor:
        return SeparatedChunkedTensor(chunks.unsqueeze(1))
