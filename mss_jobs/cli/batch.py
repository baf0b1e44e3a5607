"""`mss-jobs batch submit|status|report|cancel|retry`: bulk catalog processing over the API.

Through the same client and private-API machinery as `mss-jobs submit`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mss_jobs.cli._common import (
    api_client,
    api_option,
    fetched,
    option,
    output_options,
    progress_bar,
    request_spec,
    require_lasting_service,
)
from mss_jobs.cli.exit_codes import ExitCode, MssGroup

if TYPE_CHECKING:
    from tqdm import tqdm

    from mss_jobs.api.batch_schemas import BatchOut
    from mss_jobs.client import JobsClient

__all__ = ["batch_group"]

POLL_SECONDS = 2.0


@click.group("batch", cls=MssGroup)
def batch_group() -> None:
    """Bulk catalog processing: submit, follow, report, cancel, retry batches."""


@batch_group.command("submit")
@click.argument("source")
@api_option
@click.option("--key", default=None, help="Resubmission key: same key → same batch, no new work.")
@option("model", help="Model for every row (default: the service's).")
@output_options()
@option("priority")
@option("queue")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None)
@option("force")
@click.option("--ext", "extensions", multiple=True, help="S3 prefix: keep these extensions.")
@click.option("--glob", default=None, help="S3 prefix: keep keys matching (after the prefix).")
@click.option("--wait", is_flag=True, help="Follow the batch with a progress bar until done.")
def batch_submit(
    source: str,
    api_url: str | None,
    extensions: tuple[str, ...],
    glob: str | None,
    wait: bool,
    **options: Any,
) -> None:
    """Submit SOURCE (manifest.csv | manifest.jsonl | s3://bucket/prefix/) as one batch.

    Prints the batch id; with --wait, follows it (done / failed / running, tracks per minute,
    ETA) and exits 1 if any row was rejected or any track failed.
    """
    is_prefix = source.startswith("s3://")
    if is_prefix:
        body = request_spec({**options, "extensions": extensions, "glob": glob})
    elif extensions or glob:
        raise click.UsageError("--ext and --glob filter an s3:// prefix, not a manifest")
    elif not Path(source).is_file():
        raise click.BadParameter(f"no such manifest: {source}", param_hint="SOURCE")
    else:
        body = request_spec(options)
    if not wait:
        require_lasting_service(
            api_url,
            "without --wait the batch needs a service that outlives this command: pass --api "
            "URL (a running `mss-jobs api`) or set MSS_BROKER_URL, or add --wait",
        )
    with api_client(api_url, run_jobs=True) as client:
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
        raise click.exceptions.Exit(ExitCode.FAILED)


def _follow(client: JobsClient, batch_id: uuid.UUID) -> BatchOut:
    bar: tqdm[Any] | None = None
    try:
        while True:
            batch = client.batch(batch_id)
            if bar is None:
                bar = progress_bar(total=batch.total, unit="track")
            bar.total = batch.total
            bar.set_postfix_str(_pace(batch), refresh=False)
            bar.update(batch.finished - bar.n)
            if batch.status != "active":
                return batch
            time.sleep(POLL_SECONDS)
    finally:
        if bar is not None:
            bar.close()


def _pace(batch: BatchOut) -> str:
    counts = batch.counts
    eta = "?" if batch.eta_seconds is None else f"{batch.eta_seconds / 60:.1f} min"
    return (
        f"done {counts.get('succeeded', 0)} failed {counts.get('failed', 0)} "
        f"running {counts.get('running', 0)} | {batch.throughput_per_minute:.1f}/min ETA {eta}"
    )


def _batch_line(batch: BatchOut) -> str:
    return (
        f"batch {batch.id} {batch.status}: {batch.total} jobs, {_pace(batch)}, "
        f"{batch.rows_rejected} rows rejected"
    )


@batch_group.command("status")
@click.argument("batch_id", type=click.UUID)
@api_option
@option("json")
def batch_status(batch_id: uuid.UUID, api_url: str | None, as_json: bool) -> None:
    """Show a batch: counts by status, progress, throughput, ETA."""
    batch = fetched(api_url, lambda client: client.batch(batch_id), as_json=as_json)
    if batch is None:
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
def batch_report(batch_id: uuid.UUID, api_url: str | None, fmt: str, output: Path | None) -> None:
    """Export the report: every line → status, error, stem URIs."""
    dest = output or Path(f"batch-{batch_id}.{fmt}")
    with api_client(api_url, run_jobs=False) as client:
        client.download_report(batch_id, dest, fmt=fmt)
    click.echo(str(dest))


@batch_group.command("cancel")
@click.argument("batch_id", type=click.UUID)
@api_option
def batch_cancel(batch_id: uuid.UUID, api_url: str | None) -> None:
    """Cancel the batch and every unfinished job of it."""
    with api_client(api_url, run_jobs=False) as client:
        click.echo(_batch_line(client.cancel_batch(batch_id)))


@batch_group.command("retry")
@click.argument("batch_id", type=click.UUID)
@api_option
def batch_retry(batch_id: uuid.UUID, api_url: str | None) -> None:
    """Run the batch's failed jobs again."""
    with api_client(api_url, run_jobs=False) as client:
        result = client.retry_batch(batch_id)
    click.echo(f"{result.retried} failed job(s) queued again; {_batch_line(result.batch)}")
