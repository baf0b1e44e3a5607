"""The `mss-jobs` command line: thin wiring from options to the runner; no logic of its own."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from mss_jobs.audio.encode import validate_output
from mss_jobs.cli_jobs import COMMANDS
from mss_jobs.core.derived import DerivedStem, parse_derived
from mss_jobs.core.pipeline import SeparationSettings
from mss_jobs.errors import MssError
from mss_jobs.models.base import Separator
from mss_jobs.runner import FileSeparation, OutputSpec, RunProgress, resolve_device, separate_file
from mss_jobs.types import BitDepth, OutputFormat, WindowShape

__all__ = ["main"]

_WINDOWS: tuple[WindowShape, ...] = ("hann", "hamming", "blackman", "bartlett", "rectangular")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mss-jobs")
def main() -> None:
    """Music source separation: split tracks into stems."""


def _track_dirs(inputs: Sequence[Path], out_dir: Path) -> list[Path]:
    """`out/<track>` per input; inputs sharing a name stem keep their extension to stay apart."""
    stems = [p.stem for p in inputs]
    return [
        out_dir / (p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_")) for p in inputs
    ]


def _derived(specs: Sequence[str]) -> tuple[DerivedStem, ...]:
    return tuple(parse_derived(spec) for spec in specs)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory; stems go to OUTPUT/<track>/<stem>.<ext>.",
)
@click.option("--model", default="dsp-hpss", show_default=True, help="Model name (see `models`).")
@click.option(
    "--format", "fmt", type=click.Choice(["wav", "flac", "mp3"]), default="flac", show_default=True
)
@click.option(
    "--bit-depth",
    type=click.Choice(["16", "24", "32"]),
    default=None,
    help="wav: 16/24/32 (float); flac: 16/24. Default 24 for wav and flac.",
)
@click.option(
    "--sample-rate",
    type=click.IntRange(min=1),
    default=None,
    help="Output rate in Hz (default: the input's).",
)
@click.option(
    "--chunk-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Chunk length (default: the model's).",
)
@click.option(
    "--overlap",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Chunk overlap ratio in [0, 1) (default: the model's).",
)
@click.option(
    "--window",
    type=click.Choice(_WINDOWS),
    default=None,
    help="Overlap-add window (default: the model's).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Chunks per model call (default: the model's).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@click.option(
    "--stems", default=None, help="Comma-separated stems to write (model or derived); default all."
)
@click.option(
    "--derive",
    "derive",
    multiple=True,
    metavar="NAME=A-B|A+B",
    help="Derived stem, repeatable, e.g. instrumental=mixture-vocals.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def separate(
    inputs: tuple[Path, ...],
    out_dir: Path,
    model: str,
    fmt: OutputFormat,
    bit_depth: str | None,
    sample_rate: int | None,
    chunk_seconds: float | None,
    overlap: float | None,
    window: WindowShape | None,
    batch_size: int | None,
    device: str,
    stems: str | None,
    derive: tuple[str, ...],
    quiet: bool,
) -> None:
    """Separate INPUTS (wav, flac, ogg, mp3, aiff, m4a) into stems.

    A bad input prints one line and is skipped; the exit code is 1 if any input failed.
    """
    from mss_jobs.models.registry import create_separator  # loads torch models lazily

    try:
        separator = create_separator(model, device=resolve_device(device))
        settings = SeparationSettings.for_model(
            separator,
            chunk_seconds=chunk_seconds,
            overlap=overlap,
            window=window,
            batch_size=batch_size,
            derived=_derived(derive),
            stems=tuple(s.strip() for s in stems.split(",") if s.strip()) if stems else None,
        )
        depth: BitDepth | None = int(bit_depth) if bit_depth else None  # type: ignore[assignment]
        output = OutputSpec(format=fmt, bit_depth=depth, sample_rate=sample_rate)
        # Reject impossible format/bit-depth/rate combinations before the first input.
        validate_output(fmt, sample_rate=sample_rate or 44100, channels=1, bit_depth=depth)
    except MssError as exc:
        raise click.UsageError(f"{exc.code}: {exc}") from exc

    failures = 0
    for path, track_dir in zip(inputs, _track_dirs(inputs, out_dir), strict=True):
        try:
            result = _run_one(path, track_dir, separator, settings, output, quiet=quiet)
        except MssError as exc:
            failures += 1
            click.echo(f"error: {path}: {exc.code}: {exc}", err=True)
            continue
        clipped = [s for s in result.stems if s.clipped_samples]
        for stem in clipped:
            click.echo(
                f"warning: {path}: {stem.clipped_samples} samples of {stem.stem} clipped "
                "(use --format wav --bit-depth 32 to keep them)",
                err=True,
            )
        if not quiet:
            click.echo(
                f"{path} → {track_dir}/ ({', '.join(s.path.name for s in result.stems)}) "
                f"{result.input.duration_seconds:.1f} s of audio in {result.seconds:.1f} s"
            )
    if failures:
        click.echo(f"{failures} of {len(inputs)} input(s) failed", err=True)
        sys.exit(1)


def _run_one(
    path: Path,
    track_dir: Path,
    separator: Separator,
    settings: SeparationSettings,
    output: OutputSpec,
    *,
    quiet: bool,
) -> FileSeparation:
    bars: dict[str, tqdm[Any]] = {}
    try:
        for event in separate_file(
            path, track_dir, separator=separator, settings=settings, output=output
        ):
            if isinstance(event, FileSeparation):
                return event
            if quiet:
                continue
            bar = _bar(bars, event, path)
            bar.update(event.done - bar.n)
    finally:
        for bar in bars.values():
            bar.close()
    raise AssertionError("separate_file ended without a result")


def _bar(bars: dict[str, tqdm[Any]], event: RunProgress, path: Path) -> tqdm[Any]:
    if event.stage not in bars:
        for other in bars.values():
            other.close()
        unit, scale = ("chunk", False) if event.stage == "separate" else ("sample", True)
        bars[event.stage] = tqdm(
            total=event.total,
            desc=f"{path.name}: {event.stage}",
            unit=unit,
            unit_scale=scale,
            leave=False,
            file=sys.stderr,
        )
    bar = bars[event.stage]
    if event.total is not None and bar.total != event.total:
        bar.total = event.total
        bar.refresh()
    return bar


@main.command("models")
def models_cmd() -> None:
    """List the available models."""
    from mss_jobs.models.registry import list_models

    for spec in list_models():
        click.echo(f"{spec.name:<12} stems: {', '.join(spec.stems):<28} {spec.description}")


@main.command("demo-track")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--seconds", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True
)
@click.option("--sample-rate", type=click.IntRange(min=8000), default=44100, show_default=True)
def demo_track(path: Path, seconds: float, sample_rate: int) -> None:
    """Write a synthesized demo mix (chords + drums) to PATH (wav/flac)."""
    from mss_jobs.audio.encode import open_writer
    from mss_jobs.demo import synthesize_demo

    fmt: OutputFormat = "flac" if path.suffix.lower() == ".flac" else "wav"
    track = synthesize_demo(seconds, sample_rate=sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_writer(path, format=fmt, sample_rate=sample_rate, channels=2, bit_depth=24) as w:
        w.write(track.mixture)
        w.commit()
    click.echo(f"wrote {seconds:g} s demo track to {path}")


for _command in COMMANDS:
    main.add_command(_command)
