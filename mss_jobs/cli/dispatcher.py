"""`mss-jobs dispatcher`: the batch dispatcher as a process of its own (needs a broker)."""

from __future__ import annotations

import click

from mss_jobs.cli._common import cli_settings, log_to_stderr
from mss_jobs.cli.exit_codes import messages_without_code

__all__ = ["dispatcher"]


@click.command("dispatcher")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between rounds (default MSS_DISPATCH_INTERVAL_SECONDS).",
)
def dispatcher(interval: float | None) -> None:
    """Run the batch dispatcher alone (set MSS_RUN_DISPATCHER=false on the APIs then)."""
    from datetime import timedelta

    from mss_jobs.batches.dispatcher import Dispatcher
    from mss_jobs.db.migrate import ensure_current
    from mss_jobs.db.session import make_engine, make_session_factory
    from mss_jobs.queueing import CeleryJobQueue

    settings = cli_settings()
    if settings.embedded:
        raise click.UsageError(
            "the dispatcher needs MSS_BROKER_URL; embedded, `mss-jobs api` runs one"
        )
    log_to_stderr("INFO")
    with messages_without_code():
        ensure_current(settings.database_url, upgrade_if_behind=False)
    queue = CeleryJobQueue(settings)
    rounds = Dispatcher(
        make_session_factory(make_engine(settings.database_url)),
        queue,
        interval=interval or settings.dispatch_interval_seconds,
        stale_after=timedelta(seconds=settings.dispatch_stale_seconds),
    )
    click.echo("dispatcher running (Ctrl-C stops it)", err=True)
    try:
        rounds.run()
    except KeyboardInterrupt:
        pass  # a server's way to stop: status 0, like `api`, `worker` and `flower`
    finally:
        queue.close()
