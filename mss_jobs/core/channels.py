"""Pure channel adaptation between a track's channel count and a model's.

One rule covers every case. The track's c channels are laid out cyclically over g = ceil(c / m)
groups of the model's m channels; groups are folded into the batch, separated, unfolded, and any
channel that was fed more than once gets the mean of its copies:

- mono into a stereo model: the channel is duplicated to L/R; each stem comes back as the mean of
  its two outputs (mono in, mono out);
- 5.1 (6 channels) into a stereo model: pairs (1,2), (3,4), (5,6) are separated in one batch;
- 3 channels into a stereo model: pairs (1,2), (3,1); channel 1's stems average its two runs;
- a model that takes any channel count (m is None) sees the track as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mss_jobs.types import PaddedChunkedAudioTensor, SeparatedChunkedTensor

__all__ = ["ChannelAdapter"]


@dataclass(frozen=True)
class ChannelAdapter:
    track_channels: int
    model_channels: int | None

    def __post_init__(self) -> None:
        if self.track_channels <= 0:
            raise ValueError(f"{self.track_channels=} must be positive")
        if self.model_channels is not None and self.model_channels <= 0:
            raise ValueError(f"{self.model_channels=} must be positive")

    @property
    def passthrough(self) -> bool:
        return self.model_channels is None or self.model_channels == self.track_channels

    @property
    def groups(self) -> int:
        if self.model_channels is None:
            return 1
        return math.ceil(self.track_channels / self.model_channels)

    def _layout(self, device: torch.device) -> torch.Tensor:
        assert self.model_channels is not None
        return torch.arange(self.groups * self.model_channels, device=device) % self.track_channels

    def to_model(self, chunks: PaddedChunkedAudioTensor) -> PaddedChunkedAudioTensor:
        """(batch, track_channels, T) → (batch · groups, model_channels, T)."""
        if self.passthrough:
            return chunks
        assert self.model_channels is not None
        laid_out = chunks.index_select(1, self._layout(chunks.device))
        return PaddedChunkedAudioTensor(laid_out.reshape(-1, self.model_channels, chunks.shape[-1]))

    def from_model(self, separated: SeparatedChunkedTensor) -> SeparatedChunkedTensor:
        """(batch · groups, stems, model_channels, T) → (batch, stems, track_channels, T)."""
        if self.passthrough:
            return separated
        assert self.model_channels is not None
        bg, stems, m, size = separated.shape
        batch = bg // self.groups
        grouped = separated.reshape(batch, self.groups, stems, m, size)
        flat = grouped.permute(0, 2, 1, 3, 4).reshape(batch, stems, self.groups * m, size)
        layout = self._layout(separated.device)
        if self.groups * m == self.track_channels:
            return SeparatedChunkedTensor(flat)
        out = torch.zeros(
            batch, stems, self.track_channels, size, device=flat.device, dtype=flat.dtype
        )
        out.index_add_(2, layout, flat)
        copies = torch.bincount(layout, minlength=self.track_channels).to(flat.dtype)
        return SeparatedChunkedTensor(out / copies.view(1, 1, -1, 1))
