"""Wires the pure core into the separation pipeline; yields progress and finished audio as events.

    blocks ─▶ check finite ─▶ normalize ─▶ ChunkStream ─▶ ChannelAdapter ─▶ separator
          ─▶ Stitcher (overlap-add) ─▶ denormalize ─▶ derived stems ─▶ StemBlock events

Everything is incremental: a `StemBlock` is yielded as soon as its samples are final, so memory
is bounded by the chunk geometry (about batch_size · hop + chunk samples), not by the track. The
same generator runs in the CLI, in the Celery worker and in tests; callers own all I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from mss_jobs.core.channels import ChannelAdapter
from mss_jobs.core.chunking import ChunkPlan, ChunkStream, PaddingMode, Stitcher
from mss_jobs.core.derived import apply_derived
from mss_jobs.core.normalize import (
    IDENTITY_STATS,
    NormalizationStats,
    check_finite,
    compute_stats,
    denormalize,
    normalize,
)
from mss_jobs.core.spectral import overlap_add_window
from mss_jobs.domain.derived import DerivedStem, parse_derived, resolve_derived
from mss_jobs.domain.units import (
    MIXTURE,
    BatchSize,
    ChunkSize,
    OverlapRatio,
    Samples,
    StemName,
    WindowShape,
)
from mss_jobs.errors import ConfigError, EmptyAudioError
from mss_jobs.types import PaddedChunkedAudioTensor, RawAudioTensor, RawSeparatedTensor

if TYPE_CHECKING:  # the protocol is a type; the core never imports a model at run time
    from mss_jobs.domain.params import JobParams
    from mss_jobs.models.base import Separator

__all__ = [
    "PipelineEvent",
    "Progress",
    "SeparationSettings",
    "StemBlock",
    "output_stems",
    "separate_stream",
    "separate_tensor",
]


@dataclass(frozen=True, slots=True)
class SeparationSettings:
    """Everything the pipeline needs besides the model and the audio. Build it with
    `for_model` to start from the model's defaults."""

    chunk_size: ChunkSize
    overlap: OverlapRatio
    window: WindowShape = "hann"
    batch_size: BatchSize = 4
    normalize: bool = True
    padding_mode: PaddingMode = "reflect"
    derived: tuple[DerivedStem, ...] = ()
    stems: tuple[StemName, ...] | None = None
    """Stems to hand on (model or derived); None means all of them."""

    def __post_init__(self) -> None:
        ChunkPlan.from_overlap(self.chunk_size, self.overlap)  # validates both
        if self.batch_size <= 0:
            raise ConfigError(f"{self.batch_size=} must be positive")

    @classmethod
    def for_model(
        cls,
        separator: Separator,
        *,
        chunk_seconds: float | None = None,
        overlap: OverlapRatio | None = None,
        window: WindowShape | None = None,
        batch_size: BatchSize | None = None,
        derived: tuple[DerivedStem, ...] = (),
        stems: tuple[StemName, ...] | None = None,
    ) -> SeparationSettings:
        defaults = separator.chunk_defaults
        seconds = defaults.chunk_seconds if chunk_seconds is None else chunk_seconds
        if not seconds > 0:
            raise ConfigError(f"chunk length must be positive, got {seconds} s")
        return cls(
            chunk_size=max(1, round(seconds * separator.sample_rate)),
            overlap=defaults.overlap if overlap is None else overlap,
            window=defaults.window if window is None else window,
            batch_size=defaults.batch_size if batch_size is None else batch_size,
            normalize=defaults.normalize,
            derived=derived,
            stems=stems,
        )

    @classmethod
    def for_job(cls, separator: Separator, params: JobParams) -> SeparationSettings:
        """A job's stored params applied to `separator`'s defaults (ConfigError on a conflict)."""
        return cls.for_model(
            separator,
            chunk_seconds=params.chunk_seconds,
            overlap=params.overlap,
            window=params.window,
            batch_size=params.batch_size,
            derived=tuple(parse_derived(spec) for spec in params.derived),
            stems=params.stems,
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """`done` of `total` units of `stage` finished (total is None when the length is unknown)."""

    stage: Literal["separate"]
    done: int
    total: int | None


@dataclass(frozen=True, slots=True)
class StemBlock:
    """Final audio of every requested stem for track samples [start, start + samples), on the
    CPU, float32, (channels, samples) each, at the model's sample rate."""

    start: Samples
    stems: Mapping[StemName, RawAudioTensor] = field(repr=False)

    @property
    def samples(self) -> int:
        return next(iter(self.stems.values())).shape[-1]


PipelineEvent = Progress | StemBlock


def output_stems(separator: Separator, settings: SeparationSettings) -> tuple[StemName, ...]:
    """The stems the pipeline will yield, in order; raises ConfigError for unknown names."""
    rules = resolve_derived(settings.derived, separator.stems)
    available = (*separator.stems, *(rule.name for rule in rules))
    if settings.stems is None:
        return available
    unknown = [s for s in settings.stems if s not in available]
    if unknown:
        raise ConfigError(
            f"unknown stem(s) {', '.join(map(repr, unknown))} for model {separator.name!r}; "
            f"available: {', '.join(available)}"
        )
    return tuple(dict.fromkeys(settings.stems))


class _SampleFifo:
    """The raw mixture, kept from where the stitcher is until where the input is."""

    def __init__(self) -> None:
        self._blocks: deque[torch.Tensor] = deque()

    def push(self, block: torch.Tensor) -> None:
        self._blocks.append(block)

    def pop(self, count: int) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        while count > 0:
            head = self._blocks[0]
            if head.shape[-1] <= count:
                parts.append(self._blocks.popleft())
                count -= head.shape[-1]
            else:
                parts.append(head[:, :count])
                self._blocks[0] = head[:, count:]
                count = 0
        return torch.cat(parts, dim=-1)


def separate_stream(
    blocks: Iterable[RawAudioTensor],
    *,
    separator: Separator,
    settings: SeparationSettings,
    stats: NormalizationStats | None = None,
    total_samples: int | None = None,
) -> Iterator[PipelineEvent]:
    """Separate a track given as (channels, n) blocks at the model's sample rate.

    `stats` are the whole track's normalization statistics (`compute_stats` over a first pass);
    they are required when `settings.normalize` is on. `total_samples`, when known, only makes
    `Progress.total` available from the start.
    """
    if settings.normalize and stats is None:
        raise ValueError("settings.normalize is on: pass the track's stats (compute_stats)")
    norm_stats = stats if settings.normalize and stats is not None else IDENTITY_STATS
    rules = resolve_derived(settings.derived, separator.stems)
    wanted = output_stems(separator, settings)
    needs_mixture = MIXTURE not in separator.stems and any(
        MIXTURE in rule.sources for rule in rules
    )
    plan = ChunkPlan.from_overlap(settings.chunk_size, settings.overlap)
    window = overlap_add_window(settings.window, plan.chunk_size, device=separator.device)
    stitcher = Stitcher(plan, window=window)
    total_chunks = plan.num_chunks(total_samples) if total_samples else None
    mixture = _SampleFifo()

    stream: ChunkStream | None = None
    adapter: ChannelAdapter | None = None
    received = 0

    def emit(stitched: RawSeparatedTensor) -> Iterator[PipelineEvent]:
        if stitched.shape[-1] == 0:
            return
        audio = denormalize(stitched, norm_stats).to("cpu", torch.float32)
        stems: dict[StemName, torch.Tensor] = dict(zip(separator.stems, audio, strict=True))
        start = stitcher.returned - audio.shape[-1]
        if needs_mixture:
            stems[MIXTURE] = mixture.pop(audio.shape[-1])
        stems = apply_derived(stems, rules)
        yield StemBlock(start=start, stems={s: RawAudioTensor(stems[s]) for s in wanted})

    def run(batch: torch.Tensor, length: int | None) -> Iterator[PipelineEvent]:
        assert adapter is not None
        model_in = adapter.to_model(
            PaddedChunkedAudioTensor(batch.to(separator.device, torch.float32))
        )
        separated = adapter.from_model(separator.separate(model_in))
        yield from emit(stitcher.add(separated, length=length))
        yield Progress(stage="separate", done=stitcher.added, total=total_chunks)

    with torch.inference_mode():
        for block in blocks:
            check_finite(block, offset=received)
            if block.dim() != 2:
                raise ValueError(f"expected (channels, samples) blocks, got {tuple(block.shape)}")
            if stream is None:
                stream = ChunkStream(
                    plan,
                    channels=block.shape[0],
                    batch_size=settings.batch_size,
                    padding_mode=settings.padding_mode,
                )
                adapter = ChannelAdapter(block.shape[0], separator.channels)
            received += block.shape[-1]
            if needs_mixture:
                mixture.push(block.to(torch.float32))
            for batch in stream.push(normalize(block, norm_stats)):
                yield from run(batch, None)
        if stream is None or received == 0:
            raise EmptyAudioError("audio has zero samples: nothing to separate")
        if total_chunks is None or total_samples != received:
            total_chunks = plan.num_chunks(received)
        for batch in stream.finish():
            yield from run(batch, received)
        yield from emit(stitcher.finish(received))


def separate_tensor(
    audio: RawAudioTensor,
    *,
    separator: Separator,
    settings: SeparationSettings,
    block_samples: int = 1 << 18,
) -> dict[StemName, RawAudioTensor]:
    """In-memory convenience over `separate_stream`: (channels, samples) → stem → audio."""
    blocks = [
        RawAudioTensor(audio[:, i : i + block_samples])
        for i in range(0, audio.shape[-1], block_samples)
    ]
    stats = compute_stats(blocks) if settings.normalize else None
    parts: dict[StemName, list[torch.Tensor]] = {}
    for event in separate_stream(
        blocks,
        separator=separator,
        settings=settings,
        stats=stats,
        total_samples=audio.shape[-1],
    ):
        if isinstance(event, StemBlock):
            for name, part in event.stems.items():
                parts.setdefault(name, []).append(part)
    return {name: RawAudioTensor(torch.cat(chunks, dim=-1)) for name, chunks in parts.items()}
