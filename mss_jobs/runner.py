"""File-level separation: the edge that wires audio I/O to the pure pipeline, block by block.

    probe ─▶ pass 1: decode → stats ─▶ pass 2: decode → resample to model rate → pipeline
          ─▶ per stem: resample to output rate → encode to `<stem>.partial` ─▶ rename all

The input is decoded twice (normalization needs the whole track's statistics before the first
chunk) rather than held in memory; decoding is cheap next to separation. Stem files appear
together or not at all: any failure removes every partial file. The CLI, the Celery worker and
tests all run separation through `separate_file`, which yields progress events and ends with the
result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from mss_jobs.audio.decode import AudioInfo, probe, read_blocks
from mss_jobs.audio.encode import StemWriter, extension_for, open_writer, validate_output
from mss_jobs.audio.resample import StreamingResampler, resample_blocks
from mss_jobs.core.normalize import StatsAccumulator
from mss_jobs.core.pipeline import Progress as ChunkProgress
from mss_jobs.core.pipeline import (
    SeparationSettings,
    StemBlock,
    output_stems,
    separate_stream,
)
from mss_jobs.domain.units import BitDepth, OutputFormat, SampleRate, StemName
from mss_jobs.errors import ConfigError, OutputError
from mss_jobs.models.base import Separator
from mss_jobs.types import RawAudioTensor

if TYPE_CHECKING:
    from mss_jobs.domain.params import JobParams

__all__ = [
    "FileSeparation",
    "OutputSpec",
    "RunProgress",
    "StemFile",
    "resolve_device",
    "separate_file",
]

_BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How stems are encoded. `sample_rate=None` keeps the input's rate (stems line up with it)."""

    format: OutputFormat = "flac"
    bit_depth: BitDepth | None = None
    sample_rate: SampleRate | None = None

    @classmethod
    def for_job(cls, params: JobParams) -> OutputSpec:
        return cls(format=params.format, bit_depth=params.bit_depth, sample_rate=params.sample_rate)


@dataclass(frozen=True, slots=True)
class RunProgress:
    """`analyze` counts input samples read for statistics; `separate` counts chunks."""

    stage: Literal["analyze", "separate"]
    done: int
    total: int | None


@dataclass(frozen=True, slots=True)
class StemFile:
    stem: StemName
    path: Path
    format: OutputFormat
    sample_rate: SampleRate
    channels: int
    frames: int
    clipped_samples: int

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True, slots=True)
class FileSeparation:
    input: AudioInfo
    stems: tuple[StemFile, ...]
    model: str
    seconds: float
    """Wall time of the whole separation."""


def resolve_device(spec: str) -> torch.device:
    """`auto` (cuda when available, else cpu), `cpu`, `cuda`, `cuda:N` or `mps`."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {spec!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {spec!r} requested but MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {spec!r}; use auto, cpu, cuda[:N] or mps")
    return device


class _StemSink:
    """One stem on its way to disk: resample to the output rate, cap the length, encode."""

    def __init__(self, writer: StemWriter, resampler: StreamingResampler, *, frames: int) -> None:
        self.writer = writer
        self.resampler = resampler
        self.frames = frames
        self.written = 0

    def write(self, audio: torch.Tensor) -> None:
        self._put(self.resampler.push(audio))

    def close(self) -> None:
        self._put(self.resampler.flush())

    def _put(self, audio: torch.Tensor) -> None:
        take = min(audio.shape[-1], self.frames - self.written)
        if take > 0:
            self.writer.write(audio[:, :take])
            self.written += take


def separate_file(
    path: Path,
    out_dir: Path,
    *,
    separator: Separator,
    settings: SeparationSettings,
    output: OutputSpec = OutputSpec(),
) -> Iterator[RunProgress | FileSeparation]:
    """Separate one audio file into `out_dir/<stem>.<ext>`; yields progress, then the result.

    Raises the mss_jobs.errors tree: InputError subclasses for unusable audio, ConfigError for
    bad settings, OutputError when stems cannot be written. Nothing is left in `out_dir` on error.
    """
    started = time.perf_counter()
    stems = output_stems(separator, settings)  # fail on bad stem names before any decoding
    info = probe(path)
    model_rate = separator.sample_rate
    out_rate = output.sample_rate or info.sample_rate
    # Stems line up sample for sample with the input when written at its rate.
    out_frames = math.ceil(info.frames * out_rate / info.sample_rate)
    validate_output(
        output.format, sample_rate=out_rate, channels=info.channels, bit_depth=output.bit_depth
    )

    stats = None
    input_frames = info.frames
    if settings.normalize:
        acc = StatsAccumulator()
        for block in read_blocks(path, block_frames=_BLOCK_FRAMES, info=info):
            acc.add(block)
            yield RunProgress(stage="analyze", done=acc.samples, total=info.frames)
        stats = acc.result()
        input_frames = acc.samples  # exact, where probe may only estimate (lossy containers)
        out_frames = math.ceil(input_frames * out_rate / info.sample_rate)

    model_blocks = (
        RawAudioTensor(block)
        for block in resample_blocks(
            read_blocks(path, block_frames=_BLOCK_FRAMES, info=info),
            info.sample_rate,
            model_rate,
            channels=info.channels,
        )
    )
    created_dir = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out_dir}: {exc}") from exc

    sinks: dict[StemName, _StemSink] = {}
    try:
        for stem in stems:
            writer = open_writer(
                out_dir / f"{stem}.{extension_for(output.format)}",
                format=output.format,
                sample_rate=out_rate,
                channels=info.channels,
                bit_depth=output.bit_depth,
            )
            sinks[stem] = _StemSink(
                writer,
                StreamingResampler(model_rate, out_rate, info.channels),
                frames=out_frames,
            )
        for event in separate_stream(
            model_blocks,
            separator=separator,
            settings=settings,
            stats=stats,
            total_samples=math.ceil(input_frames * model_rate / info.sample_rate),
        ):
            if isinstance(event, StemBlock):
                for stem, audio in event.stems.items():
                    sinks[stem].write(audio)
            elif isinstance(event, ChunkProgress):
                yield RunProgress(stage="separate", done=event.done, total=event.total)
        for sink in sinks.values():
            sink.close()
        for sink in sinks.values():
            sink.writer.commit()
    except BaseException:
        for sink in sinks.values():
            sink.writer.abort()
        if created_dir:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: never removes anything we did not write
        raise

    yield FileSeparation(
        input=info,
        stems=tuple(
            StemFile(
                stem=stem,
                path=sink.writer.path,
                format=output.format,
                sample_rate=out_rate,
                channels=info.channels,
                frames=sink.written,
                clipped_samples=sink.writer.clipped_samples,
            )
            for stem, sink in sinks.items()
        ),
        model=separator.name,
        seconds=time.perf_counter() - started,
    )
