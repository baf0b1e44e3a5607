"""The `dsp-hpss` separator: quality on synthetic material, the Separator contract, its median
filter against scipy's, and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from mss_jobs.core.pipeline import SeparationSettings, separate_tensor
from mss_jobs.demo import synthesize_chords_and_bursts
from mss_jobs.errors import ConfigError
from mss_jobs.models.base import Separator
from mss_jobs.models.hpss import (
    HpssConfig,
    HpssSeparator,
    create_hpss,
    hpss_masks,
    median_filter,
)
from mss_jobs.types import PaddedChunkedAudioTensor, RawAudioTensor

RATE = 44100


# ---------------------------------------------------------------------------------------------
# material: sustained chords + decaying noise bursts, each stem known
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources() -> tuple[torch.Tensor, torch.Tensor]:
    """(harmonic, percussive), 4 s stereo float32 each, both at RMS 0.1."""
    track = synthesize_chords_and_bursts(4.0, channels=2, seed=2010)
    return track.harmonic, track.percussive


def sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """10 log10(||s||² / ||s - ŝ||²) over all channels, in dB."""
    ref, est = reference.double(), estimate.double()
    return 10 * math.log10(ref.pow(2).sum().item() / (ref - est).pow(2).sum().item())


def separate(separator: HpssSeparator, audio: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return separator.separate(PaddedChunkedAudioTensor(audio))


# ---------------------------------------------------------------------------------------------
# quality
# ---------------------------------------------------------------------------------------------


def test_defaults_separate_chords_from_bursts(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    harmonic, percussive = sources
    out = separate(HpssSeparator(), (harmonic + percussive)[None])
    assert sdr(harmonic, out[0, 0]) >= 12.0
    assert sdr(percussive, out[0, 1]) >= 12.0


def test_defaults_separate_through_the_chunked_pipeline(
    sources: tuple[torch.Tensor, torch.Tensor],
) -> None:
    # 1.5 s chunks: the 4 s mix is cut into several chunks and stitched back
    harmonic, percussive = sources
    separator = HpssSeparator()
    settings = SeparationSettings.for_model(separator, chunk_seconds=1.5)
    stems = separate_tensor(
        RawAudioTensor(harmonic + percussive), separator=separator, settings=settings
    )
    assert sdr(harmonic, stems["harmonic"]) >= 12.0
    assert sdr(percussive, stems["percussive"]) >= 12.0


def test_quality_check_rejects_a_non_separating_config(
    sources: tuple[torch.Tensor, torch.Tensor],
) -> None:
    # kernels of 1 make both medians the spectrogram itself: every mask is 0.5, stems = mix / 2
    harmonic, percussive = sources
    mix = harmonic + percussive
    config = HpssConfig(harmonic_kernel=1, percussive_kernel=1)
    out = separate(HpssSeparator(config), mix[None])
    torch.testing.assert_close(out[0, 0], mix / 2, rtol=0, atol=1e-5)
    assert sdr(harmonic, out[0, 0]) < 12.0
    assert sdr(percussive, out[0, 1]) < 12.0


def test_stems_are_not_swapped() -> None:
    # a steady tone on the left, a click every 0.4 s on the right
    t = torch.arange(2 * RATE) / RATE
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t)
    clicks = torch.zeros(2 * RATE)
    clicks[RATE // 10 :: 4 * RATE // 10] = 1.0
    out = separate(HpssSeparator(), torch.stack((tone, clicks))[None])
    tone_out, clicks_out = out[0, :, 0], out[0, :, 1]
    assert tone_out[0].pow(2).sum() > 50 * tone_out[1].pow(2).sum()
    assert clicks_out[1].pow(2).sum() > 50 * clicks_out[0].pow(2).sum()


# ---------------------------------------------------------------------------------------------
# the Separator contract
# ---------------------------------------------------------------------------------------------


def test_satisfies_the_separator_protocol() -> None:
    separator = create_hpss()
    assert isinstance(separator, Separator)
    assert separator.name == "dsp-hpss"
    assert separator.stems == ("harmonic", "percussive")
    assert separator.channels is None
    assert separator.sample_rate == 44100
    assert separator.device == torch.device("cpu")
    assert separator.dtype == torch.float32
    assert separator.config == HpssConfig()
    defaults = separator.chunk_defaults
    assert 6.0 <= defaults.chunk_seconds <= 10.0
    assert 0.25 <= defaults.overlap <= 0.5
    assert defaults.window == "hann"


def test_factory_takes_a_config_and_a_device() -> None:
    config = HpssConfig(n_fft=2048, hop_length=512, harmonic_kernel=17, percussive_kernel=17)
    separator = create_hpss(torch.device("cpu"), config)
    assert separator.config is config
    assert separator.device == torch.device("cpu")


@pytest.mark.parametrize("shape", [(1, 1, 5000), (2, 2, 9000), (3, 3, 4096), (1, 6, 2000)])
def test_output_shape_dtype_and_device(shape: tuple[int, int, int]) -> None:
    batch, channels, samples = shape
    chunks = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = separate(HpssSeparator(), chunks)
    assert out.shape == (batch, 2, channels, samples)
    assert out.dtype == torch.float32
    assert out.device == torch.device("cpu")
    assert out.is_contiguous()
    assert torch.isfinite(out).all()


def test_accepts_strided_views() -> None:
    # the pipeline hands over unfolded (overlapping) views of its buffer
    track = torch.randn(2, 12000, generator=torch.Generator().manual_seed(1))
    chunks = track.unfold(-1, 6000, 3000).transpose(0, 1)  # (3, 2, 6000), not contiguous
    separator = HpssSeparator()
    torch.testing.assert_close(
        separate(separator, chunks), separate(separator, chunks.contiguous()), rtol=0, atol=0
    )


@pytest.mark.parametrize("samples", [1, 2, 100, 2047, 4095, 4097])
def test_short_chunks_keep_their_length(samples: int) -> None:
    # shorter than n_fft (4096): the STFT has a single frame or two, the medians reflect them
    chunks = torch.randn(2, 2, samples, generator=torch.Generator().manual_seed(samples))
    out = separate(HpssSeparator(), chunks)
    assert out.shape == (2, 2, 2, samples)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(dim=1), chunks, rtol=0, atol=1e-4)


def test_empty_input_gives_empty_output() -> None:
    assert separate(HpssSeparator(), torch.zeros(2, 2, 0)).shape == (2, 2, 2, 0)
    assert separate(HpssSeparator(), torch.zeros(0, 2, 100)).shape == (0, 2, 2, 100)


def test_silence_in_silence_out() -> None:
    out = separate(HpssSeparator(), torch.zeros(2, 2, 20000))
    assert not torch.isnan(out).any()
    assert torch.count_nonzero(out) == 0


def test_partly_silent_chunks_stay_finite() -> None:
    # digital silence next to sound: medians are 0 / 0 in places (mask 0.5), never NaN
    chunks = torch.zeros(1, 2, 30000)
    chunks[0, 0, 10000:12000] = torch.randn(2000, generator=torch.Generator().manual_seed(3))
    out = separate(HpssSeparator(), chunks)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[0, :, 1]) == 0
    torch.testing.assert_close(out.sum(dim=1), chunks, rtol=0, atol=1e-5)


def test_masks_split_silence_evenly_and_sum_to_one() -> None:
    power = torch.zeros(2, 300, 80)
    power[0, 100:200, 20:60] = torch.rand(100, 40, generator=torch.Generator().manual_seed(6))
    harmonic, percussive = hpss_masks(power, HpssConfig())
    assert torch.equal(harmonic[1], torch.full_like(harmonic[1], 0.5))  # 0 / 0 is a tie
    assert ((harmonic >= 0) & (harmonic <= 1)).all()
    torch.testing.assert_close(harmonic + percussive, torch.ones_like(power), rtol=0, atol=1e-6)


def test_harmonic_plus_percussive_is_the_mixture(
    sources: tuple[torch.Tensor, torch.Tensor],
) -> None:
    mix = (sources[0] + sources[1])[None]
    for config in (HpssConfig(), HpssConfig(power=1.0), HpssConfig(power=math.inf)):
        out = separate(HpssSeparator(config), mix)
        torch.testing.assert_close(out.sum(dim=1), mix, rtol=0, atol=1e-4)


def test_margins_drop_a_residual(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    harmonic, percussive = sources
    mix = (harmonic + percussive)[None]
    plain = separate(HpssSeparator(), mix)
    strict = separate(HpssSeparator(HpssConfig(harmonic_margin=2.0, percussive_margin=2.0)), mix)
    # each stem keeps less than with unit margins; what neither keeps is dropped
    assert strict[0, 0].pow(2).sum() < plain[0, 0].pow(2).sum()
    assert strict[0, 1].pow(2).sum() < plain[0, 1].pow(2).sum()
    residual = mix[0] - strict[0].sum(dim=0)
    assert residual.pow(2).sum() > 1e-3 * mix.pow(2).sum()


def test_batch_items_are_independent() -> None:
    gen = torch.Generator().manual_seed(4)
    chunks = torch.randn(3, 2, 20000, generator=gen)
    chunks[1] *= 1e-3  # a quiet chunk next to loud ones must not be affected by them
    separator = HpssSeparator()
    batched = separate(separator, chunks)
    for i in range(3):
        alone = separate(separator, chunks[i : i + 1])
        atol = 1e-5 * min(1.0, chunks[i].abs().max().item())  # 1e-5, or relative if quiet
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=0, atol=atol)


def test_separation_is_gain_invariant(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    mix = (sources[0] + sources[1])[None, :, : 2 * RATE]
    separator = HpssSeparator()
    reference = separate(separator, mix)
    for gain in (1e-4, 1e3):
        torch.testing.assert_close(
            separate(separator, mix * gain) / gain, reference, rtol=1e-4, atol=1e-6
        )


def test_to_moves_and_keeps_float32() -> None:
    separator = HpssSeparator(HpssConfig(power=3.0))
    moved = separator.to(torch.device("cpu"), torch.float16)
    assert moved.dtype == torch.float32
    assert moved.config == separator.config
    with pytest.raises(ConfigError, match="dtype"):
        separator.to(torch.device("cpu"), torch.int16)


def test_rejects_chunks_without_a_channel_axis() -> None:
    with pytest.raises(ValueError, match="batch, channels, samples"):
        separate(HpssSeparator(), torch.zeros(2, 100))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    mix = (sources[0] + sources[1])[None]
    cpu = separate(HpssSeparator(), mix)
    gpu = separate(create_hpss(torch.device("cuda")), mix.cuda())
    assert gpu.device.type == "cuda"
    assert gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# the median filter
# ---------------------------------------------------------------------------------------------


def _reference_median(x: np.ndarray, kernel: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (kernel // 2, kernel // 2)
    padded = np.pad(x, pad, mode="symmetric")  # scipy's "reflect", also for pads > length
    return np.median(sliding_window_view(padded, kernel, axis=axis), axis=-1)


@settings(max_examples=80, deadline=None)
@given(
    length=st.integers(1, 90),
    rows=st.integers(1, 5),
    kernel=st.integers(0, 40).map(lambda k: 2 * k + 1),
    axis=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**16),
)
def test_median_filter_is_exact(length: int, rows: int, kernel: int, axis: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape = (length, rows) if axis == 0 else (rows, length)
    # few distinct values: ties everywhere, the hard case for a selection network
    x = torch.randint(0, 6, shape, generator=gen).float() * torch.rand(1, generator=gen)
    got = median_filter(x, kernel, dim=axis).numpy()
    np.testing.assert_array_equal(got, _reference_median(x.numpy(), kernel, axis))


@pytest.mark.parametrize(("kernel", "dim"), [(17, -1), (31, -1), (23, -2), (31, -2)])
def test_median_filter_equals_scipy(kernel: int, dim: int) -> None:
    x = torch.rand(2, 300, 200, generator=torch.Generator().manual_seed(kernel))
    size = [1, 1, 1]
    size[dim] = kernel
    expected = scipy.ndimage.median_filter(x.numpy(), size=size, mode="reflect")
    np.testing.assert_array_equal(median_filter(x, kernel, dim=dim).numpy(), expected)


def test_median_filter_blocks_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    import mss_jobs.models.hpss as hpss

    x = torch.rand(7, 500, generator=torch.Generator().manual_seed(5))
    whole = median_filter(x, 31, dim=-1)
    monkeypatch.setitem(hpss._BLOCK_ELEMENTS, "cpu", 600)  # one row per block
    torch.testing.assert_close(median_filter(x, 31, dim=-1), whole, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# config validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"harmonic_kernel": 30}, "harmonic_kernel=30 must be odd"),
        ({"percussive_kernel": 16}, "percussive_kernel=16 must be odd"),
        ({"harmonic_kernel": 0}, "harmonic_kernel=0 must be positive"),
        ({"percussive_kernel": -3}, "percussive_kernel=-3 must be positive"),
        ({"harmonic_kernel": 31.0}, "harmonic_kernel=31.0 must be an int"),
        ({"percussive_kernel": True}, "percussive_kernel=True must be an int"),
        ({"power": 0.0}, "power=0.0 must be a positive number"),
        ({"power": -2.0}, "power=-2.0 must be a positive number"),
        ({"power": math.nan}, "power=nan must be a positive number"),
        ({"harmonic_margin": 0.5}, "harmonic_margin=0.5 must be finite and >= 1"),
        ({"percussive_margin": math.inf}, "percussive_margin=inf must be finite and >= 1"),
        ({"n_fft": 1}, "n_fft must be at least 2"),
        ({"hop_length": 0}, "hop_length=0 must be in"),
        ({"hop_length": 3000}, "hop_length=3000 must be in"),
        ({"window": "triangle"}, "unknown window shape 'triangle'"),
    ],
)
def test_config_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        HpssConfig(**changes)  # type: ignore[arg-type]


def test_median_filter_rejects_even_kernels() -> None:
    with pytest.raises(ConfigError, match="kernel=4 must be a positive odd integer"):
        median_filter(torch.zeros(3, 10), 4, dim=-1)
