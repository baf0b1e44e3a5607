"""Window functions and the STFT / iSTFT pair of mss_jobs.core.spectral."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from mss_jobs.core.spectral import StftParams, istft, overlap_add_window, stft, stft_window
from mss_jobs.domain.units import WindowShape
from mss_jobs.errors import ConfigError

SHAPES: tuple[WindowShape, ...] = get_args(WindowShape)


def _signal(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _roundtrip_error(x: torch.Tensor, params: StftParams) -> float:
    spec = stft(x, params)
    y = istft(spec, params, length=x.shape[-1])
    assert y.shape == x.shape
    return float((y - x).abs().max())


# --- overlap-add window -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_overlap_add_window_is_strictly_positive_for_every_size(shape: WindowShape) -> None:
    for size in range(1, 2049):
        window = overlap_add_window(shape, size)
        assert window.shape == (size,)
        assert window.dtype == torch.float32
        assert bool((window > 0).all()), f"{shape} window of {size=} has a non-positive weight"
        assert bool(torch.isfinite(window).all())


@pytest.mark.parametrize("shape", SHAPES)
def test_overlap_add_window_is_symmetric_and_peaks_at_one(shape: WindowShape) -> None:
    window = overlap_add_window(shape, 513)
    torch.testing.assert_close(window, window.flip(0), rtol=0, atol=1e-6)
    assert float(window.max()) == pytest.approx(1.0, abs=1e-5)


def test_overlap_add_window_samples_midpoints_not_edges() -> None:
    # hann at the edge samples of a *periodic* STFT window is exactly 0, which is what made the
    # reference stitcher divide 0 / 0 at overlap 0. The overlap-add window must not do that.
    assert float(stft_window("hann", 64)[0]) == 0.0
    window = overlap_add_window("hann", 64)
    expected_edge = math.sin(math.pi * 0.5 / 64) ** 2
    assert float(window[0]) == pytest.approx(expected_edge, rel=1e-5)
    assert float(window[-1]) == pytest.approx(expected_edge, rel=1e-5)


def test_overlap_add_window_floors_tiny_weights() -> None:
    # hann at the first midpoint of 4096 samples is ~1.5e-7, below the 1e-6 floor
    window = overlap_add_window("hann", 4096)
    assert float(window.min()) == pytest.approx(1e-6, rel=1e-3)


@pytest.mark.parametrize("size", [0, -3])
def test_overlap_add_window_rejects_non_positive_size(size: int) -> None:
    with pytest.raises(ConfigError, match=str(size)):
        overlap_add_window("hann", size)


def test_unknown_window_shape_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="triangle"):
        overlap_add_window("triangle", 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", SHAPES)
def test_stft_window_matches_scipy_periodic_window(shape: WindowShape) -> None:
    signal = pytest.importorskip("scipy.signal")
    name = {"rectangular": "boxcar", "bartlett": "triang"}.get(shape, shape)
    size = 64
    if shape == "bartlett":
        # periodic triangle that is 0 at n = 0 and 1 at n = size / 2
        expected = torch.tensor(
            [1 - abs(2 * n / size - 1) for n in range(size)], dtype=torch.float32
        )
    else:
        expected = torch.tensor(signal.get_window(name, size, fftbins=True), dtype=torch.float32)
    torch.testing.assert_close(stft_window(shape, size), expected, rtol=0, atol=1e-6)


# --- StftParams -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "rectangular"])
@pytest.mark.parametrize("n_fft", [2, 7, 64, 255])
def test_tapered_windows_reject_hop_above_half_the_fft(shape: WindowShape, n_fft: int) -> None:
    StftParams(n_fft=n_fft, hop_length=n_fft // 2, window=shape)  # the limit itself is fine
    with pytest.raises(ConfigError, match=f"hop_length={n_fft // 2 + 1}"):
        StftParams(n_fft=n_fft, hop_length=n_fft // 2 + 1, window=shape)


@pytest.mark.parametrize("n_fft", [2, 7, 64])
def test_rectangular_allows_hop_up_to_the_fft_size(n_fft: int) -> None:
    StftParams(n_fft=n_fft, hop_length=n_fft, window="rectangular")
    with pytest.raises(ConfigError, match=f"hop_length={n_fft + 1}"):
        StftParams(n_fft=n_fft, hop_length=n_fft + 1, window="rectangular")


@pytest.mark.parametrize("shape", SHAPES)
def test_stft_params_reject_zero_hop_and_tiny_fft(shape: WindowShape) -> None:
    with pytest.raises(ConfigError, match="hop_length=0"):
        StftParams(n_fft=16, hop_length=0, window=shape)
    with pytest.raises(ConfigError, match="n_fft=1"):
        StftParams(n_fft=1, hop_length=1, window=shape)


def test_bins() -> None:
    assert StftParams(n_fft=64, hop_length=16).bins == 33
    assert StftParams(n_fft=255, hop_length=16).bins == 128


# --- STFT / iSTFT -----------------------------------------------------------------------------

FFT_SIZES = [16, 64, 255]


def _lengths(n_fft: int) -> list[int]:
    # shorter than n_fft (zero- and reflect-padded paths), around it, and long
    return [1, 2, n_fft // 2, n_fft // 2 + 1, n_fft - 1, n_fft, n_fft + 1, 9 * n_fft + 5]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_fft", FFT_SIZES)
def test_stft_istft_reconstructs_at_quarter_hop(shape: WindowShape, n_fft: int) -> None:
    params = StftParams(n_fft=n_fft, hop_length=n_fft // 4, window=shape)
    for length in _lengths(n_fft):
        error = _roundtrip_error(_signal(3, length, seed=length), params)
        assert error < 1e-5, f"{shape} {n_fft=} {length=}: max error {error}"


@pytest.mark.parametrize("n_fft", FFT_SIZES)
def test_stft_istft_reconstructs_rectangular_at_full_hop(n_fft: int) -> None:
    params = StftParams(n_fft=n_fft, hop_length=n_fft, window="rectangular")
    # remainders modulo the hop all over [0, n_fft), so the tail of the last frame is exercised
    step = max(1, n_fft // 24)
    tails = {n_fft // 2, n_fft // 2 + 1, n_fft // 2 + 2, n_fft - 1, n_fft}
    lengths = sorted({*range(1, 2 * n_fft + 2, step), *tails, *(n_fft + t for t in tails)})
    for length in [*lengths, 7 * n_fft + n_fft // 2 + 3]:
        error = _roundtrip_error(_signal(2, length, seed=length), params)
        assert error < 1e-5, f"rectangular {n_fft=} hop={n_fft} {length=}: max error {error}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_fft", [64, 255, 1024])
def test_stft_istft_reconstructs_at_the_documented_hop_limit(
    shape: WindowShape, n_fft: int
) -> None:
    # hop = n_fft // 2 is documented as valid; the last samples must come back accurately too
    params = StftParams(n_fft=n_fft, hop_length=n_fft // 2, window=shape)
    for length in [n_fft // 2 - 1, n_fft - 2, n_fft - 1, 3 * n_fft - 2, 3 * n_fft + n_fft // 3]:
        error = _roundtrip_error(_signal(2, length, seed=length), params)
        assert error < 1e-5, f"{shape} {n_fft=} hop={n_fft // 2} {length=}: max error {error}"


def test_stft_frame_count_at_quarter_hop_is_torch_centered_count() -> None:
    # the tail padding must not change the frame count in the common configuration
    for length in [1, 63, 64, 65, 1000, 1001]:
        params = StftParams(n_fft=64, hop_length=16)
        assert stft(_signal(length), params).shape == (33, 1 + length // 16)


def test_stft_preserves_leading_dimensions() -> None:
    params = StftParams(n_fft=32, hop_length=8, window="hamming")
    x = _signal(2, 3, 4, 301)
    spec = stft(x, params)
    assert spec.shape == (2, 3, 4, 17, 1 + 301 // 8)
    assert spec.dtype == torch.complex64
    # each leading entry is transformed on its own
    torch.testing.assert_close(spec[1, 2, 3], stft(x[1, 2, 3], params))
    y = istft(spec, params, length=301)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) < 1e-5


def test_stft_of_a_sinusoid_peaks_at_its_bin() -> None:
    n_fft, bin_index = 64, 5
    t = torch.arange(2048, dtype=torch.float32)
    x = torch.sin(2 * math.pi * bin_index * t / n_fft)
    spec = stft(x, StftParams(n_fft=n_fft, hop_length=16, window="hann"))
    magnitude = spec.abs()[:, 10:-10].mean(dim=-1)
    assert int(magnitude.argmax()) == bin_index
    assert float(magnitude[bin_index]) > 100 * float(magnitude[bin_index + 3])
