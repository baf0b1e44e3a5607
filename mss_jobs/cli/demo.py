"""`mss-jobs demo-track`: write a synthesized demo mix (needs the worker extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mss_jobs.domain.units import OutputFormat

__all__ = ["demo_track"]


@click.command("demo-track")
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
