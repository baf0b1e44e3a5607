"""The `identity` separator: the pipeline's correctness oracle."""

from __future__ import annotations

import torch

from mss_jobs.domain.units import MIXTURE
from mss_jobs.models.base import Separator
from mss_jobs.models.identity import IdentitySeparator
from mss_jobs.types import PaddedChunkedAudioTensor


def test_identity_satisfies_the_separator_protocol() -> None:
    separator = IdentitySeparator()
    assert isinstance(separator, Separator)
    assert separator.name == "identity"
    assert separator.stems == (MIXTURE,) == ("mixture",)
    assert separator.channels is None  # takes any channel count
    assert separator.sample_rate == 44100
    assert separator.device == torch.device("cpu")
    assert separator.dtype == torch.float32


def test_identity_returns_every_chunk_as_the_single_stem() -> None:
    chunks = PaddedChunkedAudioTensor(torch.randn(5, 3, 64))
    out = IdentitySeparator().separate(chunks)
    assert out.shape == (5, 1, 3, 64)
    torch.testing.assert_close(out[:, 0], chunks, rtol=0, atol=0)


def test_identity_accepts_strided_views() -> None:
    # the pipeline hands over unfolded (overlapping) views of its buffer
    track = torch.arange(40, dtype=torch.float32).view(1, 40)
    chunks = PaddedChunkedAudioTensor(track.unfold(-1, 16, 8).transpose(0, 1))
    assert chunks.shape == (4, 1, 16)
    out = IdentitySeparator().separate(chunks)
    assert out[2, 0, 0].tolist() == list(range(16, 32))


def test_identity_to_keeps_its_rate_and_moves_device() -> None:
    separator = IdentitySeparator(sample_rate=16000)
    moved = separator.to(torch.device("cpu"))
    assert isinstance(moved, IdentitySeparator)
    assert moved.sample_rate == 16000
    assert moved.device == torch.device("cpu")


def test_identity_defaults() -> None:
    defaults = IdentitySeparator.chunk_defaults
    assert defaults.chunk_seconds == 8.0
    assert defaults.overlap == 0.5
    assert defaults.window == "hann"
    assert defaults.batch_size == 8
    assert defaults.normalize is True
