"""`mss-jobs separate`: the pipeline run directly on files, no job system.

Needs the worker extra; the pipeline is imported when the command runs, so the slim install gets
the map's message (status 2) instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from mss_jobs.cli._common import option, progress_bar
from mss_jobs.cli.exit_codes import ExitCode, option_error
from mss_jobs.errors import MssError

if TYPE_CHECKING:
    from tqdm import tqdm

    from mss_jobs.core.pipeline import SeparationSettings
    from mss_jobs.domain.derived import DerivedStem
    from mss_jobs.domain.units import BitDepth, OutputFormat, WindowShape
    from mss_jobs.models.base import Separator
    from mss_jobs.runner import FileSeparation, OutputSpec, RunProgress

__all__ = ["separate"]


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory; stems go to OUTPUT/<track>/<stem>.<ext>.",
)
@option("model", default="dsp-hpss", show_default=True, help="Model name (see `models`).")
@click.option(
    "--model-config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Your own model: its MSST YAML or splifft JSON config (with --checkpoint).",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Your own model's weights (.ckpt/.pt/.th/.safetensors); repeat for a bag.",
)
@click.option("--tta", is_flag=True, help="Neural models: average channel-swap/polarity passes.")
@option("format", default="flac", show_default=True)
@option("bit-depth", help="wav: 16/24/32 (float); flac: 16/24. Default 24 for wav and flac.")
@option("sample-rate", help="Output rate in Hz (default: the input's).")
@option("chunk-seconds", help="Chunk length (default: the model's).")
@option("overlap", help="Chunk overlap ratio in [0, 1) (default: the model's).")
@option("window", help="Overlap-add window (default: the model's).")
@option("batch-size", help="Chunks per model call (default: the model's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N] or mps.")
@option("stems", help="Comma-separated stems to write (model or derived); default all.")
@option("derive", help="Derived stem, repeatable, e.g. instrumental=mixture-vocals.")
@option("quiet")
def separate(
    inputs: tuple[Path, ...],
    out_dir: Path,
    model: str,
    model_config: Path | None,
    checkpoints: tuple[Path, ...],
    tta: bool,
    fmt: OutputFormat,
    bit_depth: int | None,
    sample_rate: int | None,
    chunk_seconds: float | None,
    overlap: float | None,
    window: WindowShape | None,
    batch_size: int | None,
    device: str,
    stems: list[str] | None,
    derive: tuple[str, ...],
    quiet: bool,
) -> None:
    """Separate INPUTS (wav, flac, ogg, mp3, aiff, m4a) into stems.

    A bad input prints one line and is skipped; the exit code is 1 if any input failed.
    """
    from mss_jobs.audio.encode import validate_output
    from mss_jobs.core.pipeline import SeparationSettings
    from mss_jobs.runner import OutputSpec, resolve_device

    try:
        separator = _separator(model, model_config, checkpoints, resolve_device(device), tta)
        settings = SeparationSettings.for_model(
            separator,
            chunk_seconds=chunk_seconds,
            overlap=overlap,
            window=window,
            batch_size=batch_size,
            derived=_derived(derive),
            stems=None if stems is None else tuple(stems),
        )
        depth = cast("BitDepth | None", bit_depth)
        output = OutputSpec(format=fmt, bit_depth=depth, sample_rate=sample_rate)
        # Reject impossible format/bit-depth/rate combinations before the first input.
        validate_output(fmt, sample_rate=sample_rate or 44100, channels=1, bit_depth=depth)
    except MssError as exc:
        raise option_error(exc) from exc

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
        raise click.exceptions.Exit(ExitCode.FAILED)


def _track_dirs(inputs: Sequence[Path], out_dir: Path) -> list[Path]:
    """`out/<track>` per input; inputs sharing a name stem keep their extension to stay apart."""
    stems = [p.stem for p in inputs]
    return [
        out_dir / (p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_")) for p in inputs
    ]


def _derived(specs: Sequence[str]) -> tuple[DerivedStem, ...]:
    from mss_jobs.domain.derived import parse_derived

    return tuple(parse_derived(spec) for spec in specs)


def _separator(
    model: str,
    config_path: Path | None,
    checkpoints: tuple[Path, ...],
    device: Any,
    tta: bool,
) -> Separator:
    """The named model, or the user's own from `--model-config` + `--checkpoint`."""
    from mss_jobs.models.registry import LoadOptions, create_separator, load_neural_model

    if not config_path and not checkpoints:
        return create_separator(model, device=device, tta=tta)
    from mss_jobs.models.config import load_model_config

    config = load_model_config(config_path) if config_path else None
    name = model if model != "dsp-hpss" else (config_path or checkpoints[0]).stem
    return load_neural_model(
        config, list(checkpoints), name=name, options=LoadOptions(device=device, tta=tta)
    )


def _run_one(
    path: Path,
    track_dir: Path,
    separator: Separator,
    settings: SeparationSettings,
    output: OutputSpec,
    *,
    quiet: bool,
) -> FileSeparation:
    from mss_jobs.runner import FileSeparation, separate_file

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
        bars[event.stage] = progress_bar(
            total=event.total, desc=f"{path.name}: {event.stage}", unit=unit, unit_scale=scale
        )
    bar = bars[event.stage]
    if event.total is not None and bar.total != event.total:
        bar.total = event.total
        bar.refresh()
    return bar
