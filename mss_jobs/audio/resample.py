"""Streaming resampler: torchaudio's sinc resampling applied block by block, sample-identical.

`torchaudio.functional.resample` needs the whole signal. After reducing both rates by their gcd
to `orig_g` → `new_g`, it is a strided convolution: output block `j` (samples `j·new_g …
j·new_g + new_g − 1`) reads input samples `[j·orig_g − width, j·orig_g + orig_g + width)`, with
zeros outside the signal. So a segment whose start is a multiple of `orig_g` and which carries at
least `width` samples of real context on each side reproduces those output blocks exactly; the
context's outputs are trimmed. The first segment's left context is torchaudio's own zero padding
and the last segment (on `flush`) has no right context, as in the whole-signal call.

Cost: each emitted segment re-reads ⌈width / orig_g⌉·orig_g samples of left context, negligible
next to the 2¹⁸-sample blocks the decoder yields. Memory is one block plus that context.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torchaudio.functional

from mss_jobs.domain.units import Channels, SampleRate

__all__ = ["LOWPASS_FILTER_WIDTH", "ROLLOFF", "StreamingResampler", "resample_blocks"]

LOWPASS_FILTER_WIDTH = 6
"""Zero crossings of the windowed sinc on each side (torchaudio's default)."""

ROLLOFF = 0.99
"""Cut-off as a fraction of the lower Nyquist frequency (torchaudio's default)."""


class StreamingResampler:
    """Resample a `(channels, n)` stream pushed in blocks of any size, flushed at the end.

    The concatenation of every `push` result and the `flush` result equals
    `torchaudio.functional.resample(whole, orig_rate, new_rate)` (sinc_interp_hann, width 6,
    rolloff 0.99) up to float rounding, and has exactly ⌈n·new_rate / orig_rate⌉ samples.
    Equal rates are an identity: blocks are returned as they came, without a copy.
    """

    def __init__(self, orig_rate: SampleRate, new_rate: SampleRate, channels: Channels) -> None:
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_rate=} {new_rate=}")
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels=}")
        self.orig_rate = orig_rate
        self.new_rate = new_rate
        self.channels = channels
        gcd = math.gcd(orig_rate, new_rate)
        self._orig_g = orig_rate // gcd
        self._new_g = new_rate // gcd
        base = min(self._orig_g, self._new_g) * ROLLOFF
        # Same formula as torchaudio's kernel: taps reach `width` input samples on each side.
        self._width = math.ceil(LOWPASS_FILTER_WIDTH * self._orig_g / base)
        self._context_periods = math.ceil(self._width / self._orig_g)
        self._pending: list[torch.Tensor] = []
        self._buffer: torch.Tensor | None = None
        self._buffer_start = 0  # absolute input index of _buffer[:, 0]; a multiple of orig_g
        self._input_frames = 0  # absolute input index one past the last pushed sample
        self._next_period = 0  # next output period (new_g samples) to emit
        self._flushed = False
        self._dtype = torch.float32  # of the empty tensors returned before any output exists
        self._device = torch.device("cpu")

    @property
    def identity(self) -> bool:
        """True when both rates are equal and blocks pass through untouched."""
        return self.orig_rate == self.new_rate

    def output_length(self, input_frames: int) -> int:
        """Samples produced for `input_frames` input samples: ⌈n·new / orig⌉."""
        return -(-input_frames * self._new_g // self._orig_g)

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Feed the next `(channels, n)` floating-point block; return the samples now final."""
        self._check_block(block)
        self._dtype, self._device = block.dtype, block.device
        self._input_frames += block.shape[1]
        if self.identity:
            return block
        self._pending.append(block)
        ready = (self._input_frames - self._width) // self._orig_g  # periods with full context
        if ready <= self._next_period:
            return self._empty()
        return self._emit(ready, final=False)

    def flush(self) -> torch.Tensor:
        """Emit the tail (the signal's end is zero-padded, as torchaudio does); then done."""
        if self._flushed:
            raise RuntimeError("StreamingResampler.flush() called twice")
        self._flushed = True
        total_periods = -(-self.output_length(self._input_frames) // self._new_g)
        if self.identity or total_periods <= self._next_period:
            return self._empty()
        tail = self._emit(total_periods, final=True)
        self._buffer = None
        return tail

    def _emit(self, end_period: int, *, final: bool) -> torch.Tensor:
        """Resample output periods `[_next_period, end_period)` from the buffered input."""
        buffer = self._take_buffer()
        seg_period = max(0, self._next_period - self._context_periods)
        assert seg_period * self._orig_g == self._buffer_start, "buffer starts at the context"
        # The final segment is short (context + under two periods + width), so torchaudio's
        # float32 length rounding cannot drop its last sample; earlier ones are cut well before.
        resampled: torch.Tensor = torchaudio.functional.resample(
            buffer,
            self.orig_rate,
            self.new_rate,
            lowpass_filter_width=LOWPASS_FILTER_WIDTH,
            rolloff=ROLLOFF,
            resampling_method="sinc_interp_hann",
        )
        first = (self._next_period - seg_period) * self._new_g
        if final:
            last = self.output_length(self._input_frames) - seg_period * self._new_g
        else:
            last = (end_period - seg_period) * self._new_g
        out = resampled[:, first:last].contiguous()
        self._next_period = end_period
        # Keep only what the next segment can read: its left context onwards. A copy, so the
        # (large) pushed block is not kept alive through a view.
        keep_from = max(0, end_period - self._context_periods) * self._orig_g
        self._buffer = buffer[:, keep_from - self._buffer_start :].clone()
        self._buffer_start = keep_from
        return out

    def _take_buffer(self) -> torch.Tensor:
        parts = ([self._buffer] if self._buffer is not None else []) + self._pending
        self._pending = []
        buffer = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        self._buffer = buffer
        return buffer

    def _check_block(self, block: torch.Tensor) -> None:
        if self._flushed:
            raise RuntimeError("StreamingResampler.push() after flush()")
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(
                f"expected a ({self.channels}, n) block, got shape {tuple(block.shape)}"
            )
        if not block.is_floating_point():
            raise ValueError(f"expected a floating-point block, got dtype {block.dtype}")

    def _empty(self) -> torch.Tensor:
        return torch.empty((self.channels, 0), dtype=self._dtype, device=self._device)


def resample_blocks(
    blocks: Iterable[torch.Tensor],
    orig_rate: SampleRate,
    new_rate: SampleRate,
    *,
    channels: Channels,
) -> Iterator[torch.Tensor]:
    """Resample a stream of `(channels, n)` blocks; yields only non-empty blocks.

    Equal rates pass the blocks through unchanged (same tensor objects).
    """
    resampler = StreamingResampler(orig_rate, new_rate, channels)
    for block in blocks:
        out = resampler.push(block)
        if out.shape[1]:
            yield out
    tail = resampler.flush()
    if tail.shape[1]:
        yield tail
