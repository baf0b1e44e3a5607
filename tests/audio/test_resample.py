"""StreamingResampler: block-by-block output equals torchaudio's whole-signal resample."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio.functional
from hypothesis import given, settings
from hypothesis import strategies as st

from mss_jobs.audio.resample import StreamingResampler, resample_blocks

RATES = [8000, 16000, 22050, 44100, 48000, 96000]


def _stream(signal: torch.Tensor, sizes: list[int], orig: int, new: int) -> torch.Tensor:
    """Push `signal` in blocks of `sizes` (cycled), then flush; concatenate the outputs."""
    resampler = StreamingResampler(orig, new, signal.shape[0])
    outputs, start, i = [], 0, 0
    while start < signal.shape[1]:
        size = sizes[i % len(sizes)]
        outputs.append(resampler.push(signal[:, start : start + size]))
        start += size
        i += 1
    outputs.append(resampler.flush())
    return torch.cat(outputs, dim=1)


@settings(max_examples=60, deadline=None)
@given(
    orig=st.sampled_from(RATES),
    new=st.sampled_from(RATES),
    length=st.integers(min_value=1, max_value=20000),
    sizes=st.lists(st.integers(min_value=1, max_value=8000), min_size=1, max_size=12),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_matches_whole_signal_resample(
    orig: int, new: int, length: int, sizes: list[int], seed: int
) -> None:
    signal = torch.randn(2, length, generator=torch.Generator().manual_seed(seed))

    streamed = _stream(signal, sizes, orig, new)
    whole = torchaudio.functional.resample(signal, orig, new)

    assert streamed.shape == (2, math.ceil(length * new / orig))
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("orig", "new"), [(44100, 48000), (48000, 22050), (8000, 96000)])
@pytest.mark.parametrize("length", [1, 2, 5, 146, 147, 148, 1500])
def test_one_sample_blocks(orig: int, new: int, length: int) -> None:
    signal = torch.randn(1, length, generator=torch.Generator().manual_seed(length))

    streamed = _stream(signal, [1], orig, new)

    torch.testing.assert_close(
        streamed, torchaudio.functional.resample(signal, orig, new), rtol=0, atol=1e-5
    )


def test_long_signal_length_is_exact() -> None:
    # ceil(n·new/orig) in integers; torchaudio rounds it in float32 and gives one less here
    orig, new, length = 44100, 96000, 3_000_005
    resampler = StreamingResampler(orig, new, 1)
    block = torch.zeros(1, 500_000)
    produced = 0
    for start in range(0, length, block.shape[1]):
        produced += resampler.push(block[:, : min(block.shape[1], length - start)]).shape[1]
    produced += resampler.flush().shape[1]
    assert produced == -(-length * new // orig) == resampler.output_length(length)


def test_equal_rates_pass_blocks_through() -> None:
    resampler = StreamingResampler(44100, 44100, 2)
    block = torch.randn(2, 100)

    assert resampler.identity
    assert resampler.push(block) is block
    assert resampler.flush().shape == (2, 0)


def test_empty_stream_and_empty_blocks() -> None:
    resampler = StreamingResampler(44100, 16000, 2)
    assert resampler.push(torch.zeros(2, 0)).shape == (2, 0)
    assert resampler.flush().shape == (2, 0)

    signal = torch.randn(2, 500)
    resampler = StreamingResampler(44100, 16000, 2)
    parts = [resampler.push(torch.zeros(2, 0)), resampler.push(signal), resampler.flush()]
    torch.testing.assert_close(
        torch.cat(parts, dim=1), torchaudio.functional.resample(signal, 44100, 16000)
    )


def test_keeps_dtype() -> None:
    signal = torch.randn(2, 3000, dtype=torch.float64)
    out = _stream(signal, [700], 48000, 44100)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torchaudio.functional.resample(signal, 48000, 44100))


def test_resample_blocks_yields_non_empty_blocks() -> None:
    signal = torch.randn(2, 5000)
    blocks = [signal[:, i : i + 10] for i in range(0, 5000, 10)]

    out = list(resample_blocks(blocks, 48000, 16000, channels=2))

    assert all(b.shape[1] > 0 for b in out)
    torch.testing.assert_close(
        torch.cat(out, dim=1), torchaudio.functional.resample(signal, 48000, 16000)
    )


def test_resample_blocks_identity_passes_the_same_tensors() -> None:
    blocks = [torch.randn(1, 10), torch.randn(1, 5)]
    out = list(resample_blocks(blocks, 16000, 16000, channels=1))
    assert len(out) == 2
    assert all(a is b for a, b in zip(out, blocks, strict=True))


def test_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="orig_rate=0"):
        StreamingResampler(0, 16000, 1)
    with pytest.raises(ValueError, match="channels=0"):
        StreamingResampler(16000, 8000, 0)
    resampler = StreamingResampler(16000, 8000, 2)
    with pytest.raises(ValueError, match=r"\(2, n\) block, got shape \(1, 10\)"):
        resampler.push(torch.zeros(1, 10))
    with pytest.raises(ValueError, match="floating-point"):
        resampler.push(torch.zeros(2, 10, dtype=torch.int16))
    resampler.flush()
    with pytest.raises(RuntimeError, match="after flush"):
        resampler.push(torch.zeros(2, 10))
    with pytest.raises(RuntimeError, match="twice"):
        resampler.flush()
