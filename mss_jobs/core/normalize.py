"""Pure normalization: standardize the mixture for the model and undo it on the stems.

Statistics follow the convention the community's checkpoints were trained with: mean and
standard deviation of the *mono downmix* of the whole track, applied to every channel. They are
accumulated block by block (float64 sums), so a track never has to be whole in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from mss_jobs.errors import EmptyAudioError, NonFiniteAudioError
from mss_jobs.types import NormalizedAudioTensor, RawAudioTensor, RawSeparatedTensor

__all__ = [
    "NormalizationStats",
    "StatsAccumulator",
    "check_finite",
    "compute_stats",
    "denormalize",
    "normalize",
    "normalize_audio",
]

_SILENCE_STD = 1e-8
"""Below this standard deviation a track counts as constant: it is shifted, never scaled."""


@dataclass(frozen=True, slots=True)
class NormalizationStats:
    """μ and σ of the mixture's mono downmix; σ is 1.0 for silent or constant audio."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"invalid normalization stats: {self.mean=}, {self.std=}")


IDENTITY_STATS = NormalizationStats(mean=0.0, std=1.0)


def check_finite(block: torch.Tensor, *, offset: int = 0) -> None:
    """Raise NonFiniteAudioError naming the earliest NaN/Inf sample in time (and its channel);
    `offset` is the block's position in the track."""
    finite = torch.isfinite(block)
    if bool(finite.all()):
        return
    grid = finite.reshape(-1, block.shape[-1])
    index = int((~grid).any(dim=0).nonzero()[0, 0])  # earliest in time, over all channels
    channel = int((~grid[:, index]).nonzero()[0, 0])
    value = float(block.reshape(-1, block.shape[-1])[channel, index])
    raise NonFiniteAudioError(
        f"sample {offset + index} of channel {channel} is {value}: audio must be finite"
    )


class StatsAccumulator:
    """Streaming mean / std of the mono downmix. Feed (channels, n) blocks, then `result()`."""

    def __init__(self) -> None:
        self.samples = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._shift: float | None = None  # first value; shifting keeps sum-of-squares accurate

    def add(self, block: RawAudioTensor) -> None:
        check_finite(block, offset=self.samples)
        if block.shape[-1] == 0:
            return
        mono = block.to(torch.float64).mean(dim=0)
        if self._shift is None:
            self._shift = float(mono[0])
        centred = mono - self._shift
        self._sum += float(centred.sum())
        self._sum_sq += float((centred * centred).sum())
        self.samples += mono.shape[0]

    def result(self) -> NormalizationStats:
        if self.samples == 0 or self._shift is None:
            raise EmptyAudioError("audio has zero samples: nothing to separate")
        mean_c = self._sum / self.samples
        # unbiased (n - 1), like torch.std, and 0 for a single sample
        var = (self._sum_sq - self.samples * mean_c * mean_c) / max(self.samples - 1, 1)
        std = math.sqrt(max(var, 0.0))
        mean = mean_c + self._shift
        return NormalizationStats(mean=mean, std=std if std > _SILENCE_STD else 1.0)


def compute_stats(blocks: Iterable[RawAudioTensor]) -> NormalizationStats:
    """One pass over a track's blocks → its normalization statistics."""
    acc = StatsAccumulator()
    for block in blocks:
        acc.add(block)
    return acc.result()


def normalize(block: RawAudioTensor, stats: NormalizationStats) -> NormalizedAudioTensor:
    return NormalizedAudioTensor((block - stats.mean) / stats.std)


def normalize_audio(audio: RawAudioTensor) -> tuple[NormalizedAudioTensor, NormalizationStats]:
    """Whole-tensor convenience: stats of `audio` and `audio` standardized by them."""
    stats = compute_stats([audio])
    return normalize(audio, stats), stats


def denormalize(separated: RawSeparatedTensor, stats: NormalizationStats) -> RawSeparatedTensor:
    """Restore the original level of every stem: x * σ + μ (the reference convention)."""
    if stats == IDENTITY_STATS:
        return separated
    return RawSeparatedTensor(separated * stats.std + stats.mean)
