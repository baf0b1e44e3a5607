"""`mss-jobs flower`: Celery monitoring for the workers (docs/flower.md)."""

from __future__ import annotations

import click

from mss_jobs.cli._common import cli_settings
from mss_jobs.cli.exit_codes import messages_without_code

__all__ = ["flower"]


@click.command(
    "flower", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(address: str, port: int, flower_args: tuple[str, ...]) -> None:
    """Run Flower (Celery monitoring) for the workers (extra args go to Flower)."""
    from workers.flower import run_flower

    with messages_without_code():
        run_flower(cli_settings(), address=address, port=port, extra=flower_args)
