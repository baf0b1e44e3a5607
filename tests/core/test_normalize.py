"""Normalization statistics, streaming accumulation and the finiteness check."""

from __future__ import annotations

import math
import re

import pytest
import torch

from mss_jobs.core.normalize import (
    IDENTITY_STATS,
    NormalizationStats,
    StatsAccumulator,
    check_finite,
    compute_stats,
    denormalize,
    normalize,
    normalize_audio,
)
from mss_jobs.errors import EmptyAudioError, InputError, NonFiniteAudioError
from mss_jobs.types import RawAudioTensor, RawSeparatedTensor


def _audio(channels: int, samples: int, *, seed: int = 0, offset: float = 0.1) -> RawAudioTensor:
    g = torch.Generator().manual_seed(seed)
    return RawAudioTensor(0.3 * torch.randn(channels, samples, generator=g) + offset)


def _reference_stats(audio: torch.Tensor) -> tuple[float, float]:
    mono = audio.to(torch.float64).mean(dim=0)
    return float(mono.mean()), float(mono.std())  # torch.std is unbiased


def _split(audio: torch.Tensor, sizes: list[int]) -> list[RawAudioTensor]:
    blocks, start = [], 0
    while start < audio.shape[-1]:
        size = sizes[len(blocks) % len(sizes)]
        blocks.append(RawAudioTensor(audio[:, start : start + size]))
        start += size
    return blocks


def _reported_position(error: pytest.ExceptionInfo[NonFiniteAudioError]) -> tuple[int, int]:
    match = re.search(r"sample (\d+) of channel (\d+)", str(error.value))
    assert match, f"message does not name a sample and channel: {error.value}"
    return int(match.group(1)), int(match.group(2))


# --- statistics -------------------------------------------------------------------------------


def test_stats_are_mean_and_unbiased_std_of_the_mono_downmix() -> None:
    audio = _audio(2, 10_000, seed=1)
    # make the channels differ so a per-channel or interleaved statistic would be wrong
    audio[1] = 0.5 * audio[1] - 0.2
    mean, std = _reference_stats(audio)
    stats = compute_stats([audio])
    assert stats.mean == pytest.approx(mean, rel=1e-9, abs=1e-12)
    assert stats.std == pytest.approx(std, rel=1e-9)
    # not the population std, not the std of all samples
    assert stats.std != pytest.approx(float(audio.mean(dim=0).to(torch.float64).std(0, False)))
    assert stats.std != pytest.approx(float(audio.to(torch.float64).std()), rel=1e-3)


@pytest.mark.parametrize("sizes", [[1], [7], [1000], [3, 1, 4096, 15, 92, 653, 5, 8]])
def test_stats_fed_in_blocks_equal_the_whole_track_stats(sizes: list[int]) -> None:
    audio = _audio(2, 9_973, seed=2, offset=0.25)
    mean, std = _reference_stats(audio)
    blocks = _split(audio, sizes)
    acc = StatsAccumulator()
    for block in blocks:
        acc.add(block)
    assert acc.samples == 9_973
    stats = acc.result()
    assert stats.mean == pytest.approx(mean, rel=1e-9)
    assert stats.std == pytest.approx(std, rel=1e-9)


def test_stats_of_audio_with_a_large_offset_keep_their_precision() -> None:
    # the accumulator shifts by the first sample so sum-of-squares does not cancel
    audio = _audio(1, 50_000, seed=3, offset=1000.0).to(torch.float64)
    mean, std = _reference_stats(audio)
    stats = compute_stats(_split(RawAudioTensor(audio), [777]))
    assert stats.mean == pytest.approx(mean, rel=1e-12)
    assert stats.std == pytest.approx(std, rel=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.5, -0.25])
def test_constant_tracks_get_unit_std_and_their_value_as_mean(value: float) -> None:
    audio = RawAudioTensor(torch.full((2, 5000), value))
    stats = compute_stats(_split(audio, [333]))
    assert stats.std == 1.0
    assert stats.mean == value
    normalized = normalize(audio, stats)
    assert bool((normalized == 0).all())
    restored = denormalize(RawSeparatedTensor(normalized[None]), stats)[0]
    assert bool(torch.isfinite(restored).all())
    torch.testing.assert_close(restored, audio)


def test_silent_track_normalizes_to_silence() -> None:
    normalized, stats = normalize_audio(RawAudioTensor(torch.zeros(2, 1000)))
    assert stats == NormalizationStats(mean=0.0, std=1.0)
    assert not bool(torch.isnan(normalized).any())
    assert bool((normalized == 0).all())


def test_single_sample_track() -> None:
    audio = RawAudioTensor(torch.tensor([[0.25], [0.75]]))
    normalized, stats = normalize_audio(audio)
    assert stats.mean == pytest.approx(0.5)
    assert stats.std == 1.0  # a single sample has no spread
    torch.testing.assert_close(normalized, torch.tensor([[-0.25], [0.25]]))


def test_normalize_standardizes_the_downmix() -> None:
    audio = _audio(2, 20_000, seed=4, offset=0.3)
    normalized, _ = normalize_audio(audio)
    mono = normalized.to(torch.float64).mean(dim=0)
    assert float(mono.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(mono.std()) == pytest.approx(1.0, rel=1e-5)


def test_normalize_denormalize_round_trip() -> None:
    audio = _audio(2, 4096, seed=5, offset=-0.4)
    normalized, stats = normalize_audio(audio)
    assert stats.std != pytest.approx(1.0, abs=0.1)  # the round trip is not trivially 1:1
    stems = RawSeparatedTensor(torch.stack([normalized, 2 * normalized]))
    restored = denormalize(stems, stats)
    assert restored.shape == (2, 2, 4096)
    torch.testing.assert_close(restored[0], audio, rtol=0, atol=1e-6)
    # every stem is restored with the same x * std + mean
    torch.testing.assert_close(restored[1], 2 * normalized * stats.std + stats.mean)


def test_denormalize_with_identity_stats_is_a_no_op() -> None:
    stems = RawSeparatedTensor(torch.randn(1, 2, 10))
    assert denormalize(stems, IDENTITY_STATS) is stems


@pytest.mark.parametrize(
    ("mean", "std"), [(0.0, 0.0), (0.0, -1.0), (math.nan, 1.0), (0.0, math.inf)]
)
def test_invalid_stats_are_rejected(mean: float, std: float) -> None:
    with pytest.raises(ValueError, match="invalid normalization stats"):
        NormalizationStats(mean=mean, std=std)


# --- empty and non-finite audio ---------------------------------------------------------------


def test_zero_samples_is_empty_audio() -> None:
    with pytest.raises(EmptyAudioError, match="zero samples"):
        compute_stats([])
    with pytest.raises(EmptyAudioError):
        compute_stats([RawAudioTensor(torch.zeros(2, 0)), RawAudioTensor(torch.zeros(2, 0))])
    assert EmptyAudioError.code == "audio.empty"


def test_empty_blocks_between_real_ones_are_skipped() -> None:
    audio = _audio(2, 100, seed=6)
    empty = RawAudioTensor(torch.zeros(2, 0))
    blocks = [empty, RawAudioTensor(audio[:, :40]), empty, RawAudioTensor(audio[:, 40:])]
    stats, whole = compute_stats(blocks), compute_stats([audio])
    assert stats.mean == pytest.approx(whole.mean, rel=1e-12)
    assert stats.std == pytest.approx(whole.std, rel=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("channel", "index"), [(0, 0), (1, 37), (1, 99)])
def test_non_finite_sample_is_named_by_index_and_channel(
    bad: float, channel: int, index: int
) -> None:
    audio = _audio(2, 100, seed=7)
    audio[channel, index] = bad
    with pytest.raises(NonFiniteAudioError) as error:
        compute_stats([audio])
    assert _reported_position(error) == (index, channel)
    assert str(bad) in str(error.value)
    assert isinstance(error.value, InputError)
    assert error.value.code == "audio.non_finite"


def test_non_finite_sample_in_a_later_block_is_named_by_its_absolute_index() -> None:
    audio = _audio(2, 1000, seed=8)
    audio[1, 734] = math.nan
    with pytest.raises(NonFiniteAudioError) as error:
        compute_stats(_split(audio, [100, 250]))
    assert _reported_position(error) == (734, 1)


def test_check_finite_uses_the_offset_and_handles_mono_vectors() -> None:
    check_finite(torch.zeros(3, 10), offset=5)  # finite: no error
    with pytest.raises(NonFiniteAudioError) as error:
        check_finite(torch.tensor([0.0, 1.0, math.inf]), offset=1000)
    assert _reported_position(error) == (1002, 0)


def test_nearly_constant_track_counts_as_constant() -> None:
    # a spread below 1e-8 is rounding noise, not signal: shifting only, never scaling by 1e8
    g = torch.Generator().manual_seed(9)
    audio = RawAudioTensor(0.5 + 1e-12 * torch.randn(2, 1000, generator=g, dtype=torch.float64))
    stats = compute_stats([audio])
    assert stats.std == 1.0
    assert stats.mean == pytest.approx(0.5, abs=1e-11)
    # while a small but real spread is kept
    audio = RawAudioTensor(0.5 + 1e-6 * torch.randn(2, 1000, generator=g, dtype=torch.float64))
    assert compute_stats([audio]).std == pytest.approx(1e-6 / math.sqrt(2), rel=0.1)


def test_non_finite_error_names_the_earliest_sample_across_channels() -> None:
    block = torch.zeros(2, 20)
    block[0, 10] = float("inf")
    block[1, 3] = float("nan")  # later channel, earlier in time: this one is reported
    with pytest.raises(NonFiniteAudioError, match=r"sample 103 of channel 1 is nan"):
        check_finite(block, offset=100)
