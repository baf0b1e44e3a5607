"""Pure chunking and overlap-add stitching, both incremental so memory never grows with length.

Geometry (all in samples at the model rate): a track of length L is extended by P = C - H padding
samples on each side, so every real sample is covered by the same number of chunks (C / H of
them) and the first and last samples sit in the middle of some chunk instead of at a window edge.
Chunk k starts at padded position s_k = k·H - P; chunks are produced while s_k < L, which makes
ceil((L + P) / H) chunks. Padding mirrors the signal ('reflect', the reference convention) or is
silence ('constant'). Unlike the reference implementation, reflection also works when the track
is shorter than the padding (it keeps mirroring back and forth), so any L >= 1 and any overlap in
[0, 1) is valid.

`ChunkStream` turns arbitrary blocks of audio into batches of chunks as soon as their samples have
arrived; `Stitcher` overlap-adds separated chunks with a strictly positive window and hands on
every sample that no later chunk can touch (everything before the next chunk's start).
Between them, at most about `batch_size · H + C` samples per channel are held.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from mss_jobs.domain.units import BatchSize, ChunkSize, HopSize, OverlapRatio
from mss_jobs.errors import ConfigError
from mss_jobs.types import (
    PaddedChunkedAudioTensor,
    RawSeparatedTensor,
    SeparatedChunkedTensor,
    WindowTensor,
)

__all__ = ["ChunkPlan", "ChunkStream", "PaddingMode", "Stitcher"]

PaddingMode = Literal["reflect", "constant"]


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Chunk geometry: `chunk_size` C and `hop_size` H, with 0 < H <= C."""

    chunk_size: ChunkSize
    hop_size: HopSize

    def __post_init__(self) -> None:
        if not 0 < self.hop_size <= self.chunk_size:
            raise ConfigError(f"{self.hop_size=} must be in (0, {self.chunk_size=}]")

    @classmethod
    def from_overlap(cls, chunk_size: ChunkSize, overlap: OverlapRatio) -> ChunkPlan:
        """H = round(C · (1 - overlap)), at least 1 sample."""
        if chunk_size <= 0:
            raise ConfigError(f"{chunk_size=} must be positive")
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"{overlap=} must be in [0, 1)")
        return cls(chunk_size=chunk_size, hop_size=max(1, round(chunk_size * (1.0 - overlap))))

    @property
    def padding(self) -> int:
        """Samples of padding on each side of the track (P = C - H)."""
        return self.chunk_size - self.hop_size

    def chunk_start(self, index: int) -> int:
        """Position of chunk `index` on the track (negative inside the left padding)."""
        return index * self.hop_size - self.padding

    def num_chunks(self, samples: int) -> int:
        """Chunks needed for a track of `samples` samples (>= 1)."""
        if samples <= 0:
            raise ValueError(f"{samples=} must be positive")
        return math.ceil((samples + self.padding) / self.hop_size)


def _mirror(index: torch.Tensor, length: int) -> torch.Tensor:
    """Map any integer position onto [0, length) by reflecting at both ends, repeatedly."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    folded = index.remainder(period)
    return torch.where(folded < length, folded, period - folded)


class ChunkStream:
    """Blocks of (channels, n) audio in, batches of (batch, channels, chunk) chunks out.

    Usage: `for batch in stream.push(block): ...` for every block, then
    `for batch in stream.finish(): ...` once. Batches are full (`batch_size` chunks) except the
    last; interior batches are strided views into an internal buffer (no copy), valid for as long
    as the caller keeps them.
    """

    def __init__(
        self,
        plan: ChunkPlan,
        *,
        channels: int,
        batch_size: BatchSize,
        padding_mode: PaddingMode = "reflect",
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"{batch_size=} must be positive")
        if channels <= 0:
            raise ConfigError(f"{channels=} must be positive")
        self.plan = plan
        self.channels = channels
        self.batch_size = batch_size
        self.padding_mode = padding_mode
        # Arrived samples not yet dropped, as pieces joined only when a batch needs them, so
        # each sample is copied about once instead of once per push.
        self._pieces: list[torch.Tensor] = []
        self._buffer_start = 0  # track position of the first retained sample
        self.received = 0
        self.emitted = 0  # chunks handed out so far
        self._finished = False

    def push(self, block: torch.Tensor) -> Iterator[PaddedChunkedAudioTensor]:
        """Take `block` now (even if the result is never iterated); iterate the result for the
        batches it completed."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        if block.dim() != 2 or block.shape[0] != self.channels:
            raise ValueError(
                f"expected a ({self.channels}, n) block, got shape {tuple(block.shape)}"
            )
        if block.shape[-1] > 0:
            self._pieces.append(block.to(torch.float32))
            self.received += block.shape[-1]
        return self._ready_batches()

    def _ready_batches(self) -> Iterator[PaddedChunkedAudioTensor]:
        # Mirroring the left edge reads samples up to index P, so wait for them first.
        if self.received <= self.plan.padding:
            return
        while True:
            last = self.emitted + self.batch_size - 1
            if self.plan.chunk_start(last) + self.plan.chunk_size > self.received:
                break
            yield self._take(self.batch_size, length=None)

    def finish(self) -> Iterator[PaddedChunkedAudioTensor]:
        """Mark the end of the track now; iterate the result for the remaining batches."""
        already, self._finished = self._finished, True
        return iter(()) if already else self._final_batches()

    def _final_batches(self) -> Iterator[PaddedChunkedAudioTensor]:
        if self.received == 0:
            return
        total = self.plan.num_chunks(self.received)
        while self.emitted < total:
            yield self._take(min(self.batch_size, total - self.emitted), length=self.received)

    def _take(self, count: int, *, length: int | None) -> PaddedChunkedAudioTensor:
        plan = self.plan
        lo = plan.chunk_start(self.emitted)
        hi = plan.chunk_start(self.emitted + count - 1) + plan.chunk_size
        segment = self._segment(lo, hi, length=length)
        batch = segment.unfold(-1, plan.chunk_size, plan.hop_size).transpose(0, 1)
        self.emitted += count
        self._trim()
        return PaddedChunkedAudioTensor(batch)

    def _joined(self) -> torch.Tensor:
        if len(self._pieces) > 1:
            self._pieces = [torch.cat(self._pieces, dim=-1)]
        return self._pieces[0]

    def _segment(self, lo: int, hi: int, *, length: int | None) -> torch.Tensor:
        """Samples at track positions [lo, hi), padding synthesized where they fall outside."""
        start = self._buffer_start
        if lo >= start and hi <= self.received:
            first = self._pieces[0]
            if hi - start <= first.shape[-1]:  # inside the first piece: a view, no copy
                return first[:, lo - start : hi - start]
            return self._joined()[:, lo - start : hi - start]
        # Only the parts outside the track are synthesized; the rest is sliced.
        end = self.received if length is None else length
        joined = self._joined()
        parts = []
        if lo < 0:
            parts.append(self._padding(joined, lo, min(hi, 0), length=length))
        if max(lo, 0) < min(hi, end):
            parts.append(joined[:, max(lo, 0) - start : min(hi, end) - start])
        if hi > end:
            parts.append(self._padding(joined, max(lo, end), hi, length=length))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _padding(
        self, joined: torch.Tensor, lo: int, hi: int, *, length: int | None
    ) -> torch.Tensor:
        """Padding samples for positions [lo, hi), all outside the track.

        While the track is still arriving only the left edge can be outside it, and its mirror
        image (at most P samples in) has arrived. After finish(), mirror at both ends, and beyond
        the right padding use silence (that audio only feeds discarded output)."""
        if self.padding_mode == "constant":
            return joined.new_zeros(joined.shape[0], hi - lo)
        position = torch.arange(lo, hi)
        source = position.abs() if length is None else _mirror(position, length)
        # Beyond L + P the mirror may point before the retained samples; those are zeroed below.
        start = self._buffer_start
        padded = joined.index_select(-1, source.clamp_min(start) - start)
        if length is not None and hi > length + self.plan.padding:
            padded[:, max(length + self.plan.padding - lo, 0) :] = 0.0
        return padded

    def _trim(self) -> None:
        """Drop samples no future chunk (or mirror image of the right edge) can read."""
        keep_from = min(
            self.plan.chunk_start(self.emitted), self.received - (self.plan.padding + 1)
        )
        keep_from = max(keep_from, 0)
        drop = keep_from - self._buffer_start
        while drop > 0:
            head = self._pieces[0]
            if head.shape[-1] <= drop:
                self._pieces.pop(0)
                drop -= head.shape[-1]
                self._buffer_start += head.shape[-1]
            else:
                self._pieces[0] = head[:, drop:]
                self._buffer_start += drop
                drop = 0


class Stitcher:
    """Overlap-add of separated chunks, in order, normalized by the summed window.

    `add(batch)` returns the samples that became final — all positions before the next chunk's
    start — as a (stems, channels, n) tensor (n may be 0), already trimmed of the left padding;
    `finish(length)` returns the rest up to the track's length. Concatenated, the outputs are the
    stitched track. Runs on the device of the chunks it is given.

    Every real sample is covered by every chunk that can reach it (that is what the padding is
    for), so the window sum at a position depends only on its phase modulo H. Dividing the window
    by that periodic sum once, up front, makes the overlap-add itself produce final samples: no
    weight accumulation and no division pass. Within a batch each chunk adds into the P samples
    it shares with earlier chunks and writes its last H samples fresh, so the accumulator is never
    zeroed either; what is handed on is a view of it, not a copy.
    """

    def __init__(self, plan: ChunkPlan, *, window: WindowTensor) -> None:
        if window.shape != (plan.chunk_size,):
            raise ValueError(
                f"window of shape {tuple(window.shape)} does not fit {plan.chunk_size=}"
            )
        if not bool((window > 0).all()):
            raise ValueError("overlap-add window must be strictly positive")
        self.plan = plan
        self.weights = _normalized_window(window, plan.hop_size)
        self.added = 0  # chunks stitched so far
        self.returned = 0  # track samples handed out so far
        self._tail: torch.Tensor | None = None  # P samples from chunk_start(added) onwards

    def add(
        self, chunks: SeparatedChunkedTensor, *, length: int | None = None
    ) -> RawSeparatedTensor:
        """Stitch the next chunks; pass the track's `length` once it is known (the chunks of
        `ChunkStream.finish`), so nothing past the end is handed on."""
        if chunks.dim() != 4 or chunks.shape[-1] != self.plan.chunk_size:
            raise ValueError(
                f"expected (batch, stems, channels, {self.plan.chunk_size}) chunks, "
                f"got shape {tuple(chunks.shape)}"
            )
        count, stems, channels, size = chunks.shape
        hop, shared = self.plan.hop_size, self.plan.padding
        acc = torch.empty(
            stems, channels, (count - 1) * hop + size, device=chunks.device, dtype=torch.float32
        )
        tail = self._tail
        if tail is None or tail.shape[:2] != (stems, channels):
            acc[..., :shared].zero_()
        else:
            acc[..., :shared] = tail
        if self.weights.device != chunks.device:  # move once, not once per batch
            self.weights = self.weights.to(chunks.device)
        head_w, fresh_w = self.weights[:shared], self.weights[shared:]
        for i in range(count):
            at = i * hop
            chunk = chunks[i]
            if shared:
                acc[..., at : at + shared].addcmul_(chunk[..., :shared], head_w)
            torch.mul(chunk[..., shared:], fresh_w, out=acc[..., at + shared : at + size])
        self.added += count
        ready = count * hop  # positions before the next chunk's start are final
        self._tail = acc[..., ready:]
        first = self.plan.chunk_start(self.added) - ready
        return self._emit(acc[..., :ready], first=first, limit=length)

    def finish(self, length: int) -> RawSeparatedTensor:
        """The remaining samples up to `length`, the track's total length."""
        if self._tail is None or self.added == 0:
            raise ValueError("finish() before any chunk was added")
        covered = self.plan.chunk_start(self.added - 1) + self.plan.chunk_size
        if covered < length:
            raise ValueError(f"chunks cover {covered} samples, fewer than {length=}")
        out = self._emit(self._tail, first=self.plan.chunk_start(self.added), limit=length)
        self._tail = None
        return out

    def _emit(self, acc: torch.Tensor, *, first: int, limit: int | None) -> RawSeparatedTensor:
        """Hand on track positions [max(first, returned), limit) of `acc`, whose sample 0 sits
        at track position `first`."""
        lo = max(self.returned - first, 0)
        hi = acc.shape[-1] if limit is None else min(limit - first, acc.shape[-1])
        hi = max(hi, lo)
        self.returned = max(self.returned, first + hi)
        return RawSeparatedTensor(acc[..., lo:hi])


def _normalized_window(window: WindowTensor, hop: int) -> torch.Tensor:
    """`window` divided by its overlap-add sum at hop `hop`, which is periodic in `hop`: the
    weights of all chunks covering any fully covered sample then add up to exactly 1."""
    size = window.shape[-1]
    periods = -(-size // hop)
    folded = torch.zeros(periods * hop, dtype=torch.float64)
    folded[:size] = window.to("cpu", torch.float64)
    period_sum = folded.reshape(periods, hop).sum(dim=0)
    return (folded[:size] / period_sum.repeat(periods)[:size]).to(torch.float32)
