"""The `Separator` protocol over any built neural network (`torch.nn.Module`).

The architectures in `mss_jobs.models.nn` map a waveform batch `(B, C, T)` to stems
`(B, S, C, T)`; this adapter adds what running them in production needs and nothing else:

- **inference only**: eval mode, no gradients, `torch.inference_mode()`;
- **mixed precision on CUDA**: `dtype` float16/bfloat16 runs the module under autocast (weights
  stay float32; the architectures keep STFT and norms in float32). Elsewhere only float32;
- **`torch.compile`** (opt-in), compiled on the first call, so building a separator stays cheap;
- **out-of-memory recovery**: a batch that does not fit on the GPU is split in halves and each
  half retried (recursively, down to one chunk); the smallest size that had to be used is
  remembered, so later calls start there instead of failing again, and it is logged;
- **test-time augmentation** (opt-in): the output is averaged with the model's output for the
  channel-swapped input (swapped back) and for the polarity-inverted input (inverted back).
  Each costs one more forward pass; the gain is small (a few tenths of a dB SDR, model-dependent).

The output is always float32 with the stems in the model's order (the config's `stems`).
`StemBag` combines several models that each specialize in some stems (demucs' "bags", such as
`htdemucs_ft`) into one module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mss_jobs.domain.units import Channels, SampleRate, StemName
from mss_jobs.errors import ConfigError
from mss_jobs.models.base import ChunkDefaults
from mss_jobs.models.config import ModelConfig
from mss_jobs.types import PaddedChunkedAudioTensor, SeparatedChunkedTensor

__all__ = ["AUTOCAST_DTYPES", "NeuralSeparator", "StemBag", "chunk_defaults_of", "parse_dtype"]

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    """`float32` / `float16` / `bfloat16` → the torch dtype (ConfigError otherwise)."""
    try:
        return AUTOCAST_DTYPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown compute dtype {name!r}; expected one of {', '.join(AUTOCAST_DTYPES)}"
        ) from None


def chunk_defaults_of(config: ModelConfig) -> ChunkDefaults:
    return ChunkDefaults(
        chunk_seconds=config.chunk_seconds,
        overlap=config.overlap,
        window=config.window,
        batch_size=config.batch_size,
        normalize=config.normalize,
    )


class _BatchLimit:
    """The largest batch known to fit, shared by a separator and its `to()` copies."""

    def __init__(self) -> None:
        self.size: int | None = None


class NeuralSeparator:
    """A built `nn.Module` as a `Separator`; see the module docstring for what it adds."""

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        sample_rate: SampleRate,
        channels: Channels,
        stems: Sequence[StemName],
        chunk_defaults: ChunkDefaults,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
        tta: bool = False,
    ) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.channels: Channels = channels
        self.stems: tuple[StemName, ...] = tuple(stems)
        self.chunk_defaults = chunk_defaults
        self.device = device or torch.device("cpu")
        self.dtype = _check_dtype(dtype, self.device)
        self.compile = compile
        self.tta = tta
        self.module = module.to(self.device).eval().requires_grad_(False)
        self._compiled: Callable[..., Any] | None = None
        self._limit = _BatchLimit()

    @classmethod
    def from_config(
        cls,
        module: nn.Module,
        config: ModelConfig,
        *,
        name: str,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
        tta: bool = False,
    ) -> NeuralSeparator:
        return cls(
            module,
            name=name,
            sample_rate=config.sample_rate,
            channels=config.channels,
            stems=config.stems,
            chunk_defaults=chunk_defaults_of(config),
            device=device,
            dtype=dtype,
            compile=compile,
            tta=tta,
        )

    @property
    def max_batch_size(self) -> int | None:
        """The batch size out-of-memory recovery settled on, or None while every batch fit."""
        return self._limit.size

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> NeuralSeparator:
        """Move the module to `device` (in place, as `nn.Module.to` does) and return a separator
        for it; `dtype` None keeps this one's compute dtype where the device allows it."""
        if dtype is None:
            dtype = self.dtype if device.type == "cuda" else torch.float32
        moved = NeuralSeparator(
            self.module,
            name=self.name,
            sample_rate=self.sample_rate,
            channels=self.channels,
            stems=self.stems,
            chunk_defaults=self.chunk_defaults,
            device=device,
            dtype=dtype,
            compile=self.compile,
            tta=self.tta,
        )
        moved._limit = self._limit
        return moved

    # -- the protocol -----------------------------------------------------------------------

    def separate(self, chunks: PaddedChunkedAudioTensor) -> SeparatedChunkedTensor:
        """(B, C, T) → (B, S, C, T) float32 on this separator's device."""
        if chunks.ndim != 3 or chunks.shape[1] != self.channels:
            raise ValueError(
                f"{self.name} expects chunks of shape (batch, {self.channels}, samples), "
                f"got {tuple(chunks.shape)}"
            )
        with torch.inference_mode():
            x = chunks.to(device=self.device, dtype=torch.float32).contiguous()
            if x.shape[0] == 0:
                return SeparatedChunkedTensor(
                    x.new_zeros((0, len(self.stems), x.shape[1], x.shape[2]))
                )
            total = self._run(x)
            if self.tta:
                total = self._augmented(x, total)
        return SeparatedChunkedTensor(total)

    # -- internals ----------------------------------------------------------------------------

    def _augmented(self, x: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
        """Average of the plain output with the inverse-augmented outputs of augmented inputs."""
        total = plain
        count = 1
        if x.shape[1] > 1:  # channel swap (a reversal: its own inverse)
            total = total + self._run(x.flip(1)).flip(2)
            count += 1
        total = total - self._run(-x)  # polarity: the model is (nearly) odd
        count += 1
        return total / count

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The module over `x` in batches no larger than the remembered limit."""
        limit = self._limit.size
        if limit is None or x.shape[0] <= limit:
            return self._forward_fitting(x)
        parts = [self._forward_fitting(x[i : i + limit]) for i in range(0, x.shape[0], limit)]
        return torch.cat(parts)

    def _forward_fitting(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass, or, on CUDA out-of-memory, two on the halves of the batch."""
        try:
            return self._forward(x)
        except torch.OutOfMemoryError:
            if x.shape[0] == 1:
                raise
        # Outside the `except`: the exception, and the tensors its traceback pins, are gone.
        half = (x.shape[0] + 1) // 2
        self._remember(half, failed=x.shape[0])
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return torch.cat((self._forward_fitting(x[:half]), self._forward_fitting(x[half:])))

    def _remember(self, size: int, *, failed: int) -> None:
        if self._limit.size is None or size < self._limit.size:
            self._limit.size = size
            log.warning(
                "%s: out of memory on %s with a batch of %d chunks; using batches of at most "
                "%d from now on",
                self.name,
                self.device,
                failed,
                size,
            )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        function = self._function()
        with self._autocast():
            y = function(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{self.name}: the module returned {type(y).__name__}, not a tensor")
        if y.ndim == 3 and len(self.stems) == 1:  # a one-stem model returning (B, C, T)
            y = y.unsqueeze(1)
        expected = (x.shape[0], len(self.stems), x.shape[1], x.shape[2])
        if tuple(y.shape) != expected:
            raise RuntimeError(
                f"{self.name}: the module returned shape {tuple(y.shape)} for input "
                f"{tuple(x.shape)}; expected {expected}"
            )
        return y.float()

    def _function(self) -> Callable[..., Any]:
        if not self.compile:
            return self.module
        if self._compiled is None:
            self._compiled = torch.compile(self.module)
        return self._compiled

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def _check_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if dtype not in AUTOCAST_DTYPES.values():
        raise ConfigError(f"compute dtype {dtype} is not one of float32, float16, bfloat16")
    if dtype != torch.float32 and device.type != "cuda":
        raise ConfigError(
            f"compute dtype {dtype} needs a CUDA device (mixed precision); {device} runs float32"
        )
    return dtype


class StemBag(nn.Module):
    """Several models with the same stems, mixed per stem by a weight matrix.

    `weights[m][s]` is model m's share of stem s; each stem is the weighted mean over the models
    (demucs' bag rule). `htdemucs_ft` is four models with an identity matrix: model s gives stem
    s. Models with no weight on any stem are dropped; all others run on every chunk.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[Sequence[float]]) -> None:
        super().__init__()
        if len(models) != len(weights) or not models:
            raise ConfigError(f"a bag needs one weight row per model: {len(models)} models, "
                              f"{len(weights)} rows")  # fmt: skip
        stems = {len(row) for row in weights}
        if len(stems) != 1:
            raise ConfigError(f"bag weight rows differ in length: {sorted(stems)}")
        matrix = torch.tensor([list(map(float, row)) for row in weights], dtype=torch.float32)
        if (matrix < 0).any() or (matrix.sum(0) <= 0).any():
            raise ConfigError("bag weights must be >= 0 with a positive total for every stem")
        used = [i for i in range(len(models)) if matrix[i].sum() > 0]
        self.models = nn.ModuleList(models[i] for i in used)
        self.register_buffer("weights", matrix[used] / matrix[used].sum(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.get_buffer("weights")
        total: torch.Tensor | None = None
        for model, row in zip(self.models, weights, strict=True):
            y = model(x).float() * row[None, :, None, None]
            total = y if total is None else total + y
        assert total is not None
        return total
