"""`mss-jobs worker`: a Celery worker for the separation queues (needs a broker)."""

from __future__ import annotations

import click

from mss_jobs.cli._common import cli_settings
from mss_jobs.cli.exit_codes import messages_without_code

__all__ = ["worker"]


@click.command(
    "worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("-Q", "--queues", default=None, help="Comma-separated (default: both lanes).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    queues: str | None, concurrency: int, pool: str, loglevel: str, celery_args: tuple[str, ...]
) -> None:
    """Run a Celery worker for the separation queues (extra args go to `celery worker`)."""
    settings = cli_settings()
    if settings.embedded:
        raise click.UsageError(
            "no broker configured: set MSS_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run "
            "workers; without one, `mss-jobs api` and `mss-jobs submit` run jobs in-process"
        )
    from mss_jobs.db.migrate import ensure_current
    from workers.app import create_app

    with messages_without_code():
        ensure_current(settings.database_url, upgrade_if_behind=False)
    lanes = queues or f"{settings.queue_interactive},{settings.queue_bulk}"
    argv = ["worker", "-Q", lanes, "-c", str(concurrency), "-P", pool, "-l", loglevel]
    create_app(settings).worker_main([*argv, *celery_args])
