"""NeuralSeparator over stand-in modules on the CPU: shapes and dtypes, inference mode, batch
splitting on (fake) out-of-memory, test-time augmentation, compile, and StemBag."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

from mss_jobs.errors import ConfigError
from mss_jobs.models.base import ChunkDefaults, Separator
from mss_jobs.models.config import ModelConfig
from mss_jobs.models.neural import NeuralSeparator, StemBag, chunk_defaults_of, parse_dtype
from mss_jobs.types import PaddedChunkedAudioTensor

CPU = torch.device("cpu")
DEFAULTS = ChunkDefaults(chunk_seconds=1.0, overlap=0.5)


class Affine(nn.Module):
    """Stem s, channel c = weight[s, c] · x[c] + bias[s, c]: not odd (bias) and not channel
    symmetric (per-channel weights), so both augmentations change its output."""

    def __init__(self, stems: int = 2, channels: int = 2, *, bias: float = 0.25) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(stems * 10 + channels)
        self.weight = nn.Parameter(torch.rand(stems, channels, generator=generator) + 0.5)
        self.bias = nn.Parameter(torch.full((stems, channels), bias))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x[:, None] * self.weight[None, :, :, None] + self.bias[None, :, :, None]


class OneStem(nn.Module):
    """The community's one-stem convention: (B, C, T) out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x


class FitsOnly(Affine):
    """Raises CUDA's out-of-memory error for batches above `fits`, like a too-small GPU."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits
        self.failures = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.fits:
            self.failures += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (fake): batch {x.shape[0]}")
        return super().forward(x)


def _separator(module: nn.Module, *, stems: int = 2, channels: int = 2, **options: Any) -> Any:
    return NeuralSeparator(
        module,
        name="stand-in",
        sample_rate=44100,
        channels=channels,
        stems=[f"s{i}" for i in range(stems)],
        chunk_defaults=DEFAULTS,
        **options,
    )


def _chunks(batch: int = 5, channels: int = 2, samples: int = 64) -> PaddedChunkedAudioTensor:
    generator = torch.Generator().manual_seed(batch)
    return PaddedChunkedAudioTensor(torch.randn(batch, channels, samples, generator=generator))


def test_separate_returns_float32_stems_in_order() -> None:
    module = Affine()
    separator = _separator(module)
    assert isinstance(separator, Separator)
    chunks = _chunks()
    out = separator.separate(chunks)
    assert out.shape == (5, 2, 2, 64)
    assert out.dtype == torch.float32
    assert out.is_inference()
    with torch.no_grad():
        expected = module(chunks)
    torch.testing.assert_close(out, expected)
    assert not any(p.requires_grad for p in module.parameters())
    assert not module.training


def test_strided_half_precision_input_is_accepted() -> None:
    separator = _separator(Affine())
    wide = _chunks(samples=128).half()
    out = separator.separate(PaddedChunkedAudioTensor(wide[..., ::2]))
    assert out.shape == (5, 2, 2, 64)
    assert out.dtype == torch.float32


def test_one_stem_modules_returning_three_dims_are_adapted() -> None:
    out = _separator(OneStem(), stems=1).separate(_chunks())
    assert out.shape == (5, 1, 2, 64)
    torch.testing.assert_close(out[:, 0], 0.5 * _chunks())


def test_wrong_shapes_are_reported() -> None:
    with pytest.raises(RuntimeError, match=r"returned shape \(5, 2, 2, 64\)"):
        _separator(Affine(), stems=3).separate(_chunks())
    with pytest.raises(ValueError, match=r"expects chunks of shape \(batch, 2, samples\)"):
        _separator(Affine()).separate(_chunks(channels=1))


def test_an_empty_batch_gives_an_empty_result() -> None:
    out = _separator(Affine()).separate(_chunks()[:0])
    assert out.shape == (0, 2, 2, 64)


def test_out_of_memory_splits_the_batch_and_remembers(caplog: pytest.LogCaptureFixture) -> None:
    reference = _separator(Affine()).separate(_chunks(batch=5))
    module = FitsOnly(fits=2)
    separator = _separator(module)
    with caplog.at_level(logging.WARNING, logger="mss_jobs.models.neural"):
        out = separator.separate(_chunks(batch=5))
    torch.testing.assert_close(out, reference)
    # 5 fails, then its first half of 3 fails; halves of 2 and 1 fit: 2 is remembered
    assert separator.max_batch_size == 2
    assert module.failures == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("batch of 5" in m and "at most 3" in m for m in messages)
    assert any("batch of 3" in m and "at most 2" in m for m in messages)

    module.calls.clear()
    again = separator.separate(_chunks(batch=7))
    assert module.failures == 2  # no new failure: the limit applies up front
    assert module.calls == [2, 2, 2, 1]
    torch.testing.assert_close(again, _separator(Affine()).separate(_chunks(batch=7)))


def test_out_of_memory_at_batch_one_is_raised() -> None:
    separator = _separator(FitsOnly(fits=0))
    with pytest.raises(torch.OutOfMemoryError):
        separator.separate(_chunks(batch=3))
    assert separator.max_batch_size == 1


def test_other_errors_are_not_retried() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch in layer 3")

    separator = _separator(Broken())
    with pytest.raises(RuntimeError, match="layer 3"):
        separator.separate(_chunks())
    assert separator.max_batch_size is None


def test_moved_copies_share_the_learned_batch_limit() -> None:
    separator = _separator(FitsOnly(fits=2))
    separator.separate(_chunks(batch=4))
    moved = separator.to(CPU)
    assert moved.max_batch_size == 2
    assert moved.module is separator.module


def test_test_time_augmentation_averages_swap_and_polarity() -> None:
    module = Affine()
    x = _chunks()
    with torch.no_grad():
        plain = module(x)
        swapped = module(x.flip(1)).flip(2)
        inverted = -module(-x)
    expected = (plain + swapped + inverted) / 3
    out = _separator(module, tta=True).separate(x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, plain)


def test_tta_on_mono_uses_polarity_only() -> None:
    module = Affine(channels=1)
    x = _chunks(channels=1)
    with torch.no_grad():
        expected = (module(x) - module(-x)) / 2
    torch.testing.assert_close(_separator(module, channels=1, tta=True).separate(x), expected)


def test_tta_leaves_an_equivariant_model_unchanged() -> None:
    module = Affine(bias=0.0)
    with torch.no_grad():
        module.weight.fill_(0.7)  # the same for both channels: swap-equivariant and odd
    x = _chunks()
    torch.testing.assert_close(
        _separator(module, tta=True).separate(x), _separator(module).separate(x)
    )


def test_mixed_precision_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        _separator(Affine(), dtype=torch.float16)
    with pytest.raises(ConfigError, match="not one of"):
        _separator(Affine(), dtype=torch.float64)
    separator = _separator(Affine())
    assert separator.to(CPU, None).dtype == torch.float32
    assert parse_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ConfigError, match="float64"):
        parse_dtype("float64")


def test_compile_is_applied_once_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []

    def fake_compile(module: nn.Module, **_: Any) -> nn.Module:
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = Affine()
    separator = _separator(module, compile=True)
    assert compiled == []  # building stays cheap
    separator.separate(_chunks())
    separator.separate(_chunks())
    assert compiled == [module]


def test_from_config_takes_rate_channels_stems_and_chunking() -> None:
    config = ModelConfig(
        architecture="bs_roformer",
        params={},
        sample_rate=48000,
        channels=2,
        stems=("vocals", "other"),
        chunk_size=96000,
        overlap=0.75,
        window="hamming",
        batch_size=3,
        normalize=True,
    )
    separator = NeuralSeparator.from_config(Affine(), config, name="cfg")
    assert (separator.name, separator.sample_rate, separator.channels) == ("cfg", 48000, 2)
    assert separator.stems == ("vocals", "other")
    assert separator.chunk_defaults == chunk_defaults_of(config)
    assert separator.chunk_defaults == ChunkDefaults(
        chunk_seconds=2.0, overlap=0.75, window="hamming", batch_size=3, normalize=True
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_returns_float32(dtype: torch.dtype) -> None:
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layer(x)
            assert y.dtype == dtype  # autocast ran the matmul in `dtype`
            return y[:, None]

    device = torch.device("cuda")
    separator = _separator(Linear(), stems=1, device=device, dtype=dtype)
    out = separator.separate(PaddedChunkedAudioTensor(_chunks().to(device)))
    assert out.dtype == torch.float32
    assert out.device.type == "cuda"


# -- StemBag ------------------------------------------------------------------------------------


def test_bag_takes_each_stem_from_its_specialist() -> None:
    first, second = Affine(), Affine(bias=-1.0)
    bag = StemBag([first, second], [[1.0, 0.0], [0.0, 1.0]])
    x = _chunks()
    with torch.no_grad():
        out = bag(x)
        torch.testing.assert_close(out[:, 0], first(x)[:, 0])
        torch.testing.assert_close(out[:, 1], second(x)[:, 1])


def test_bag_weights_are_normalized_per_stem_and_idle_models_dropped() -> None:
    first, second, idle = Affine(), Affine(bias=-1.0), Affine(bias=9.0)
    bag = StemBag([first, second, idle], [[1.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    assert len(bag.models) == 2
    x = _chunks()
    with torch.no_grad():
        a, b = first(x), second(x)
        out = bag(x)
    torch.testing.assert_close(out[:, 0], (a[:, 0] + b[:, 0]) / 2)
    torch.testing.assert_close(out[:, 1], (3 * a[:, 1] + b[:, 1]) / 4)


@pytest.mark.parametrize(
    "weights",
    [[[1.0, 0.0]], [[1.0, 0.0], [1.0]], [[1.0, -1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]],
)
def test_bag_refuses_bad_weights(weights: list[list[float]]) -> None:
    with pytest.raises(ConfigError):
        StemBag([Affine(), Affine()], weights)
