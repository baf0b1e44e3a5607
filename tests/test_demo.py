"""Synthesized demo material: deterministic, the right shape, sources that sum to the mix."""

from __future__ import annotations

import pytest
import torch

from mss_jobs.demo import synthesize_chords_and_bursts, synthesize_demo


@pytest.mark.parametrize("make", [synthesize_demo, synthesize_chords_and_bursts])
def test_sources_sum_to_the_mixture_deterministically(make: object) -> None:
    a = make(1.5, seed=3)  # type: ignore[operator]
    b = make(1.5, seed=3)  # type: ignore[operator]
    c = make(1.5, seed=4)  # type: ignore[operator]
    assert a.mixture.shape == (2, 66150)
    assert a.mixture.dtype == torch.float32
    torch.testing.assert_close(a.harmonic + a.percussive, a.mixture, atol=1e-6, rtol=0)
    assert torch.equal(a.mixture, b.mixture)
    assert not torch.equal(a.mixture, c.mixture)
    assert float(a.harmonic.pow(2).mean()) > 1e-4
    assert float(a.percussive.pow(2).mean()) > 1e-4


@pytest.mark.parametrize("make", [synthesize_demo, synthesize_chords_and_bursts])
def test_rejects_non_positive_durations(make: object) -> None:
    with pytest.raises(ValueError, match="seconds"):
        make(0.0)  # type: ignore[operator]


def test_demo_mix_is_playable_without_clipping() -> None:
    track = synthesize_demo(4.0)
    assert 0.5 < float(track.mixture.abs().max()) <= 0.7 + 1e-6
