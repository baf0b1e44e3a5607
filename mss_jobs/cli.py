"""The `mss-jobs` command line: thin wiring from options to the runner; no logic of its own."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from mss_jobs.cli_batches import COMMANDS as BATCH_COMMANDS
from mss_jobs.cli_jobs import COMMANDS as JOB_COMMANDS
from mss_jobs.domain.units import WINDOW_SHAPES
from mss_jobs.errors import MssError

# Importing the CLI imports no torch: the slim (API-only) install runs `mss-jobs api`,
# `dispatcher`, `flower` and `migrate`; separation commands import the pipeline when they run.
if TYPE_CHECKING:
    from mss_jobs.core.derived import DerivedStem
    from mss_jobs.core.pipeline import SeparationSettings
    from mss_jobs.domain.units import BitDepth, OutputFormat, WindowShape
    from mss_jobs.models.base import Separator
    from mss_jobs.runner import FileSeparation, OutputSpec, RunProgress
    from mss_jobs.settings import Settings

__all__ = ["main"]


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
    from mss_jobs.core.derived import parse_derived

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
    type=click.Choice(WINDOW_SHAPES),
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
    model_config: Path | None,
    checkpoints: tuple[Path, ...],
    tta: bool,
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


@main.group("models", invoke_without_command=True)
@click.pass_context
def models_cmd(ctx: click.Context) -> None:
    """List, inspect and download models (`mss-jobs models` alone lists them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


def _model_settings() -> Settings:
    from mss_jobs.settings import get_settings

    try:
        return get_settings()
    except MssError as exc:
        raise click.UsageError(f"{exc.code}: {exc}") from exc


@models_cmd.command("list")
def models_list() -> None:
    """Every model, whether its files are here (*), its stems and what it is."""
    from mss_jobs.models.catalog import is_available, list_model_infos

    model_dir = _model_settings().model_dir
    for info in list_model_infos():
        mark = "*" if is_available(info.name, model_dir=model_dir) else " "
        click.echo(f"{mark} {info.name:<24} stems: {', '.join(info.stems):<36} {info.description}")
    click.echo(f"(* = ready here; others need `mss-jobs models pull NAME`; cache: {model_dir})")


@models_cmd.command("show")
@click.argument("name")
def models_show(name: str) -> None:
    """Details of model NAME: architecture, stems, license, files and where they are cached."""
    from mss_jobs.models.catalog import get_model_info, is_available
    from mss_jobs.models.known import KNOWN_MODELS
    from mss_jobs.models.weights import cache_path

    model_dir = _model_settings().model_dir
    try:
        info = get_model_info(name)
    except MssError as exc:
        raise click.UsageError(f"{exc.code}: {exc}") from exc
    click.echo(f"name:         {info.name}")
    click.echo(f"kind:         {info.kind}")
    if info.architecture:
        click.echo(f"architecture: {info.architecture}")
    click.echo(f"stems:        {', '.join(info.stems)}")
    click.echo(f"description:  {info.description}")
    if info.license:
        click.echo(f"license:      {info.license}")
    click.echo(f"available:    {'yes' if is_available(name, model_dir=model_dir) else 'no'}")
    known = KNOWN_MODELS.get(name)
    if known is None:
        return
    for role, resource in [("config", known.config)] + [
        ("checkpoint", c) for c in known.checkpoints
    ]:
        if resource is None:
            continue
        path = cache_path(model_dir, resource)
        digest = resource.sha256 or "unknown (not published)"
        if resource.sha256 and len(resource.sha256) < 64:
            digest += "… (prefix)"
        click.echo(f"{role}:")
        click.echo(f"  url:    {resource.url}")
        click.echo(f"  sha256: {digest}")
        click.echo(f"  cached: {path if path.is_file() else 'no'}")


@models_cmd.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even if cached.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def models_pull(names: tuple[str, ...], force: bool, quiet: bool) -> None:
    """Download the files of models NAMES into the model cache (MSS_MODEL_DIR)."""
    from mss_jobs.models.known import get_known_model
    from mss_jobs.models.weights import model_store_from_settings

    store = model_store_from_settings(_model_settings(), pull=True)
    try:
        models = [get_known_model(name) for name in names]
    except MssError as exc:
        raise click.UsageError(f"{exc.code}: {exc}") from exc
    failures = 0
    for model in models:
        try:
            for resource in model.resources:
                with tqdm(
                    desc=f"{model.name}: {resource.name}",
                    unit="B",
                    unit_scale=True,
                    leave=False,
                    file=sys.stderr,
                    disable=quiet,
                ) as bar:

                    def advance(done: int, total: int | None, bar: tqdm[Any] = bar) -> None:
                        if total is not None and bar.total != total:
                            bar.total = total
                        bar.update(done - bar.n)

                    store.fetch(resource, progress=advance, force=force)
        except MssError as exc:
            failures += 1
            click.echo(f"error: {model.name}: {exc.code}: {exc}", err=True)
            continue
        click.echo(f"{model.name}: ready in {store.root}")
    if failures:
        sys.exit(1)


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


for _command in (*JOB_COMMANDS, *BATCH_COMMANDS):
    main.add_command(_command)
