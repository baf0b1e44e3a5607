"""The `mss-jobs batch …` commands (bulk catalog processing) and `mss-jobs dispatcher`.

Thin wiring over the batches API, through the same client and private-API machinery as
`mss-jobs submit` (`mss_jobs.cli_jobs`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from mss_jobs.cli_jobs import (
    api_client,
    api_option,
    cli_errors,
    cli_settings,
    log_to_stderr,
    request_spec,
)

if TYPE_CHECKING:
    from mss_jobs.client import JobsClient

__all__ = ["COMMANDS"]


@click.group("batch")
def batch_group() -> None:
    """Bulk catalog processing: submit, follow, report, cancel, retry batches."""


@batch_group.command("submit")
@click.argument("source")
@api_option
@click.option("--key", default=None, help="Resubmission key: same key → same batch, no new work.")
@click.option("--model", default=None, help="Model for every row (default: the service's).")
@click.option("--stems", default=None, help="Comma-separated stems to keep (default all).")
@click.option("--derive", multiple=True, metavar="NAME=A-B|A+B", help="Derived stem, repeatable.")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac", "mp3"]), default=None)
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default=None)
@click.option("--sample-rate", type=click.IntRange(min=1), default=None)
@click.option("--priority", type=click.IntRange(0, 9), default=None)
@click.option("--queue", "lane", type=click.Choice(["interactive", "bulk"]), default=None)
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None)
@click.option("--force", is_flag=True, help="Separate even when an identical result exists.")
@click.option("--ext", "extensions", multiple=True, help="S3 prefix: keep these extensions.")
@click.option("--glob", default=None, help="S3 prefix: keep keys matching (after the prefix).")
@click.option("--wait", is_flag=True, help="Follow the batch with a progress bar until done.")
def batch_submit_cmd(
    source: str,
    api_url: str | None,
    fmt: str | None,
    bit_depth: str | None,
    stems: str | None,
    derive: tuple[str, ...],
    lane: str | None,
    extensions: tuple[str, ...],
    glob: str | None,
    wait: bool,
    force: bool,
    **options: Any,
) -> None:
    """Submit SOURCE (manifest.csv | manifest.jsonl | s3://bucket/prefix/) as one batch.

    Prints the batch id; with --wait, follows it (done / failed / running, tracks per minute,
    ETA) and exits 1 if any row was rejected or any track failed.
    """
    body = request_spec(
        options,
        fmt=fmt,
        bit_depth=bit_depth,
        stems=stems,
        derive=derive,
        lane=lane,
        force=force,
    )
    is_prefix = source.startswith("s3://")
    if is_prefix:
        body.update({"extensions": list(extensions) or None, "glob": glob})
        body = {k: v for k, v in body.items() if v is not None}
    elif extensions or glob:
        raise click.UsageError("--ext and --glob filter an s3:// prefix, not a manifest")
    elif not Path(source).is_file():
        raise click.BadParameter(f"no such manifest: {source}", param_hint="SOURCE")
    if not wait and not api_url and cli_settings().embedded:
        raise click.UsageError(
            "without --wait the batch needs a service that outlives this command: pass --api "
            "URL (a running `mss-jobs api`) or set MSS_BROKER_URL, or add --wait"
        )
    with cli_errors(), api_client(api_url, run_jobs=True) as client:
        batch = (
            client.submit_batch_prefix(source, body)
            if is_prefix
            else client.submit_batch_manifest(Path(source), body)
        )
        verb = "created" if batch.created is not False else "found (same key)"
        click.echo(
            f"batch {batch.id} {verb}: {batch.rows_accepted} rows accepted, "
            f"{batch.rows_rejected} rejected",
            err=True,
        )
        for rejection in batch.rejections or ():
            click.echo(f"  line {rejection.line}: {rejection.code}: {rejection.message}", err=True)
        if not wait:
            click.echo(str(batch.id))
            return
        batch = _follow(client, batch.id)
    click.echo(_batch_line(batch))
    if batch.counts.get("failed", 0) or batch.rows_rejected or batch.status == "cancelled":
        click.echo(f"see `mss-jobs batch report {batch.id}` for failed and rejected rows", err=True)
        sys.exit(1)


def _follow(client: JobsClient, batch_id: Any, poll_seconds: float = 2.0) -> Any:
    import time

    bar: tqdm[Any] | None = None
    try:
        while True:
            batch = client.batch(batch_id)
            if bar is None:
                bar = tqdm(total=batch.total, unit="track", file=sys.stderr, leave=False)
            bar.total = batch.total
            bar.set_postfix_str(_pace(batch), refresh=False)
            bar.update(batch.finished - bar.n)
            if batch.status != "active":
                return batch
            time.sleep(poll_seconds)
    finally:
        if bar is not None:
            bar.close()


def _pace(batch: Any) -> str:
    counts = batch.counts
    eta = "?" if batch.eta_seconds is None else f"{batch.eta_seconds / 60:.1f} min"
    return (
        f"done {counts.get('succeeded', 0)} failed {counts.get('failed', 0)} "
        f"running {counts.get('running', 0)} | {batch.throughput_per_minute:.1f}/min ETA {eta}"
    )


def _batch_line(batch: Any) -> str:
    return (
        f"batch {batch.id} {batch.status}: {batch.total} jobs, {_pace(batch)}, "
        f"{batch.rows_rejected} rows rejected"
    )


@batch_group.command("status")
@click.argument("batch_id", type=click.UUID)
@api_option
@click.option("--json", "as_json", is_flag=True)
def batch_status_cmd(batch_id: Any, api_url: str | None, as_json: bool) -> None:
    """Show a batch: counts by status, progress, throughput, ETA."""
    with cli_errors(), api_client(api_url, run_jobs=False) as client:
        batch = client.batch(batch_id)
    if as_json:
        click.echo(json.dumps(batch.model_dump(mode="json"), indent=2))
        return
    click.echo(_batch_line(batch))
    click.echo("  " + "  ".join(f"{k} {v}" for k, v in batch.counts.items()))


@batch_group.command("report")
@click.argument("batch_id", type=click.UUID)
@api_option
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Default: batch-<id>.<format>",
)
def batch_report_cmd(batch_id: Any, api_url: str | None, fmt: str, output: Path | None) -> None:
    """Export the report: every line → status, error, stem URIs."""
    dest = output or Path(f"batch-{batch_id}.{fmt}")
    with cli_errors(), api_client(api_url, run_jobs=False) as client:
        client.download_report(batch_id, dest, fmt=fmt)
    click.echo(str(dest))


@batch_group.command("cancel")
@click.argument("batch_id", type=click.UUID)
@api_option
def batch_cancel_cmd(batch_id: Any, api_url: str | None) -> None:
    """Cancel the batch and every unfinished job of it."""
    with cli_errors(), api_client(api_url, run_jobs=False) as client:
        click.echo(_batch_line(client.cancel_batch(batch_id)))


@batch_group.command("retry")
@click.argument("batch_id", type=click.UUID)
@api_option
def batch_retry_cmd(batch_id: Any, api_url: str | None) -> None:
    """Run the batch's failed jobs again."""
    with cli_errors(), api_client(api_url, run_jobs=False) as client:
        result = client.retry_batch(batch_id)
    click.echo(f"{result.retried} failed job(s) queued again; {_batch_line(result.batch)}")


@click.command("dispatcher")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between rounds (default MSS_DISPATCH_INTERVAL_SECONDS).",
)
def dispatcher_cmd(interval: float | None) -> None:
    """Run the batch dispatcher alone (set MSS_RUN_DISPATCHER=false on the APIs then)."""
    from datetime import timedelta

    from mss_jobs.api.queue import CeleryJobQueue
    from mss_jobs.batches.dispatcher import Dispatcher
    from mss_jobs.db import make_engine, make_session_factory
    from mss_jobs.db.migrate import ensure_current

    settings = cli_settings()
    if settings.embedded:
        raise click.UsageError(
            "the dispatcher needs MSS_BROKER_URL; embedded, `mss-jobs api` runs one"
        )
    log_to_stderr("INFO")
    with cli_errors(with_code=False):
        ensure_current(settings.database_url, upgrade_if_behind=False)
    queue = CeleryJobQueue(settings)
    dispatcher = Dispatcher(
        make_session_factory(make_engine(settings.database_url)),
        queue,
        interval=interval or settings.dispatch_interval_seconds,
        stale_after=timedelta(seconds=settings.dispatch_stale_seconds),
    )
    click.echo("dispatcher running (Ctrl-C stops it)", err=True)
    try:
        dispatcher.run()
    except KeyboardInterrupt:
        pass
    finally:
        queue.close()


COMMANDS: tuple[click.Command, ...] = (batch_group, dispatcher_cmd)
