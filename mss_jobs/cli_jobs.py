"""The `mss-jobs` commands of the job system: api, worker, flower, migrate, submit, status.

Thin wiring. `submit` and `status` speak HTTP to an API: the one at `--api` (or `MSS_API_URL`),
or, without one, a private API this command serves on a loopback port for its own duration —
with the embedded worker when no broker is configured. Either way a job takes the production
path: row committed → job id published → Celery task → storage → outputs → download over HTTP.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from mss_jobs.errors import MssError
from mss_jobs.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mss_jobs.api.schemas import JobOut
    from mss_jobs.client import JobsClient

__all__ = ["COMMANDS"]

API_URL_VARIABLE = "MSS_API_URL"

_api_option = click.option(
    "--api",
    "api_url",
    envvar=API_URL_VARIABLE,
    default=None,
    metavar="URL",
    help=f"API base URL (env {API_URL_VARIABLE}). Default: serve one in this process "
    "from the MSS_* settings (with an embedded worker when no broker is set).",
)


def _settings() -> Settings:
    try:
        return load_settings()
    except MssError as exc:
        raise click.ClickException(str(exc)) from exc


def _log_to_stderr(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@contextmanager
def _service_app(settings: Settings, *, run_jobs: bool) -> Iterator[FastAPI]:
    """The API app for `settings`; with `run_jobs` and no broker, an embedded worker behind it."""
    from mss_jobs.api.main import create_app
    from mss_jobs.db.migrate import ensure_current

    # SQLite is the embedded database: nobody shares it, so it migrates itself.
    ensure_current(
        settings.database_url, upgrade_if_behind=settings.database_url.startswith("sqlite")
    )
    if run_jobs and settings.embedded:
        from workers.embedded import EmbeddedWorker

        with EmbeddedWorker(settings) as worker:
            yield create_app(settings, queue=worker)
    else:
        yield create_app(settings)


@contextmanager
def _client(api_url: str | None, *, run_jobs: bool) -> Iterator[JobsClient]:
    from mss_jobs.client import JobsClient

    if api_url:
        with JobsClient(api_url) as client:
            yield client
        return
    from mss_jobs.api.server import serve_in_thread

    # The private server and worker report through this command's own output; their logs
    # would repeat it (a failed job is a warning there), so only errors get through.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    with (
        _service_app(_settings(), run_jobs=run_jobs) as app,
        serve_in_thread(app) as url,
        JobsClient(url, trust_env=False) as client,
    ):
        yield client


# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--log-level", default="info", show_default=True)
def api_cmd(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API (and, with no MSS_BROKER_URL, an embedded worker)."""
    import uvicorn

    settings = _settings()
    _log_to_stderr(log_level)
    try:
        with _service_app(settings, run_jobs=True) as app:
            mode = "embedded worker, in-memory queue" if settings.embedded else "broker"
            click.echo(f"mss-jobs API on http://{host}:{port} ({mode}); docs at /docs", err=True)
            uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc


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
def worker_cmd(
    queues: str | None, concurrency: int, pool: str, loglevel: str, celery_args: tuple[str, ...]
) -> None:
    """Run a Celery worker for the separation queues (extra args go to `celery worker`)."""
    settings = _settings()
    if settings.embedded:
        raise click.UsageError(
            "no broker configured: set MSS_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run "
            "workers; without one, `mss-jobs api` and `mss-jobs submit` run jobs in-process"
        )
    from mss_jobs.db.migrate import ensure_current
    from workers.app import create_app

    try:
        ensure_current(settings.database_url, upgrade_if_behind=False)
    except MssError as exc:
        raise click.ClickException(str(exc)) from exc
    lanes = queues or f"{settings.queue_interactive},{settings.queue_bulk}"
    argv = ["worker", "-Q", lanes, "-c", str(concurrency), "-P", pool, "-l", loglevel]
    create_app(settings).worker_main([*argv, *celery_args])


@click.command(
    "flower", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower_cmd(address: str, port: int, flower_args: tuple[str, ...]) -> None:
    """Run Flower (Celery monitoring) for the workers (extra args go to Flower)."""
    from workers.flower import run_flower

    try:
        run_flower(_settings(), address=address, port=port, extra=flower_args)
    except MssError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Upgrade target.")
@click.option("--downgrade", "down_to", default=None, metavar="REV", help="Downgrade to REV.")
def migrate_cmd(revision: str, down_to: str | None) -> None:
    """Bring the database schema to the code's (Alembic upgrade head)."""
    from mss_jobs.db import migrate

    url = _settings().database_url
    before = migrate.current_revision(url)
    if down_to is not None:
        migrate.downgrade(url, down_to)
    else:
        migrate.upgrade(url, revision)
    click.echo(f"database: {before or 'empty'} → {migrate.current_revision(url) or 'empty'}")


# ---------------------------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------------------------


@click.command("submit")
@click.argument("source")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Stems go to OUTPUT/<stem>.<ext> (default: ./stems/<track>).",
)
@_api_option
@click.option("--model", default=None, help="Model name (default: the service's).")
@click.option("--stems", default=None, help="Comma-separated stems to keep (default all).")
@click.option("--derive", multiple=True, metavar="NAME=A-B|A+B", help="Derived stem, repeatable.")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac", "mp3"]), default=None)
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default=None)
@click.option("--sample-rate", type=click.IntRange(min=1), default=None)
@click.option("--chunk-seconds", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=None)
@click.option("--priority", type=click.IntRange(0, 9), default=None, help="0..9, 9 most urgent.")
@click.option("--queue", "lane", type=click.Choice(["interactive", "bulk"]), default=None)
@click.option("--idempotency-key", default=None, help="Same key → same job, never a second one.")
@click.option("--force", is_flag=True, help="Separate even when an identical result exists.")
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def submit_cmd(
    source: str,
    out_dir: Path | None,
    api_url: str | None,
    fmt: str | None,
    bit_depth: str | None,
    derive: tuple[str, ...],
    stems: str | None,
    lane: str | None,
    idempotency_key: str | None,
    force: bool,
    no_wait: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Submit SOURCE (a local audio file, uploaded; or s3://bucket/key) as a job, wait for it
    and download its stems. Exit code 1 if the job fails."""
    spec = {k: v for k, v in options.items() if v is not None}
    spec.update(
        {
            k: v
            for k, v in {
                "format": fmt,
                "bit_depth": int(bit_depth) if bit_depth else None,
                "stems": [s.strip() for s in stems.split(",") if s.strip()] if stems else None,
                "derived": list(derive) or None,
                "queue": lane,
                "force": force or None,
            }.items()
            if v is not None
        }
    )
    is_uri = "://" in source
    local = Path(source)
    if not is_uri and not local.is_file():
        raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    if no_wait and not api_url and _settings().embedded:
        raise click.UsageError(
            "--no-wait needs a service that outlives this command: pass --api URL (a running "
            "`mss-jobs api`) or set MSS_BROKER_URL"
        )
    track = Path(source.rsplit("/", 1)[-1]).stem or "track"
    destination = out_dir or Path("stems") / track
    try:
        with _client(api_url, run_jobs=True) as client:
            job = (
                client.submit_uri(source, spec, idempotency_key=idempotency_key)
                if is_uri
                else client.submit_file(local, spec, idempotency_key=idempotency_key)
            )
            if no_wait:
                click.echo(str(job.id))
                return
            if not quiet:
                click.echo(f"job {job.id} {job.status} ({job.model})", err=True)
            job = client.wait(job.id, on_update=None if quiet else _ProgressBar(source))
            if job.status != "succeeded":
                _report_unfinished(job)
                sys.exit(1)
            paths = client.download(job, destination)
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
    click.echo(f"{source} → {destination}/ ({', '.join(p.name for p in paths)}) [job {job.id}]")


@click.command("status")
@click.argument("job_id", type=click.UUID)
@_api_option
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def status_cmd(job_id: Any, api_url: str | None, as_json: bool) -> None:
    """Show a job: status, progress, error and its stems."""
    try:
        with _client(api_url, run_jobs=False) as client:
            job = client.job(job_id)
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(job.model_dump(mode="json"), indent=2))
        return
    click.echo(f"job {job.id}  {job.status}  {job.model}  {job.progress:.0%} {job.stage or ''}")
    click.echo(f"  input    {job.input}")
    click.echo(f"  attempts {job.attempts}  created {job.created_at:%Y-%m-%d %H:%M:%S}Z")
    if job.error is not None:
        click.echo(f"  error    {job.error.code}: {job.error.message}")
    for output in job.outputs or ():
        click.echo(
            f"  {output.stem:<12} {output.format} {output.sample_rate} Hz "
            f"{output.duration_seconds:.1f} s {output.size_bytes} B  {output.download}"
        )


class _ProgressBar:
    """A tqdm bar in percent, relabelled with the job's stage as it moves."""

    def __init__(self, label: str) -> None:
        self.label = Path(label).name
        self.bar: tqdm[Any] | None = None

    def __call__(self, job: JobOut) -> None:
        if self.bar is None:
            self.bar = tqdm(total=100, unit="%", leave=False, file=sys.stderr)
        self.bar.set_description(f"{self.label}: {job.stage or job.status}", refresh=False)
        self.bar.update(round(job.progress * 100) - self.bar.n)
        if job.status.is_terminal:
            self.bar.close()


def _report_unfinished(job: JobOut) -> None:
    if job.error is not None:
        click.echo(
            f"error: job {job.id} {job.status}: {job.error.code}: {job.error.message}", err=True
        )
    else:
        click.echo(f"error: job {job.id} {job.status}", err=True)


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------


@click.group("batch")
def batch_group() -> None:
    """Bulk catalog processing: submit, follow, report, cancel, retry batches."""


@batch_group.command("submit")
@click.argument("source")
@_api_option
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
    body = {k: v for k, v in options.items() if v is not None}
    body.update(
        {
            k: v
            for k, v in {
                "format": fmt,
                "bit_depth": int(bit_depth) if bit_depth else None,
                "stems": [s.strip() for s in stems.split(",") if s.strip()] if stems else None,
                "derived": list(derive) or None,
                "queue": lane,
                "force": force or None,
            }.items()
            if v is not None
        }
    )
    is_prefix = source.startswith("s3://")
    if is_prefix:
        body.update({"extensions": list(extensions) or None, "glob": glob})
        body = {k: v for k, v in body.items() if v is not None}
    elif extensions or glob:
        raise click.UsageError("--ext and --glob filter an s3:// prefix, not a manifest")
    elif not Path(source).is_file():
        raise click.BadParameter(f"no such manifest: {source}", param_hint="SOURCE")
    if not wait and not api_url and _settings().embedded:
        raise click.UsageError(
            "without --wait the batch needs a service that outlives this command: pass --api "
            "URL (a running `mss-jobs api`) or set MSS_BROKER_URL, or add --wait"
        )
    try:
        with _client(api_url, run_jobs=True) as client:
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
                click.echo(
                    f"  line {rejection.line}: {rejection.code}: {rejection.message}", err=True
                )
            if not wait:
                click.echo(str(batch.id))
                return
            batch = _follow(client, batch.id)
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
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
@_api_option
@click.option("--json", "as_json", is_flag=True)
def batch_status_cmd(batch_id: Any, api_url: str | None, as_json: bool) -> None:
    """Show a batch: counts by status, progress, throughput, ETA."""
    try:
        with _client(api_url, run_jobs=False) as client:
            batch = client.batch(batch_id)
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(batch.model_dump(mode="json"), indent=2))
        return
    click.echo(_batch_line(batch))
    click.echo("  " + "  ".join(f"{k} {v}" for k, v in batch.counts.items()))


@batch_group.command("report")
@click.argument("batch_id", type=click.UUID)
@_api_option
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
    try:
        with _client(api_url, run_jobs=False) as client:
            client.download_report(batch_id, dest, fmt=fmt)
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
    click.echo(str(dest))


@batch_group.command("cancel")
@click.argument("batch_id", type=click.UUID)
@_api_option
def batch_cancel_cmd(batch_id: Any, api_url: str | None) -> None:
    """Cancel the batch and every unfinished job of it."""
    try:
        with _client(api_url, run_jobs=False) as client:
            click.echo(_batch_line(client.cancel_batch(batch_id)))
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc


@batch_group.command("retry")
@click.argument("batch_id", type=click.UUID)
@_api_option
def batch_retry_cmd(batch_id: Any, api_url: str | None) -> None:
    """Run the batch's failed jobs again."""
    try:
        with _client(api_url, run_jobs=False) as client:
            result = client.retry_batch(batch_id)
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from exc
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

    settings = _settings()
    if settings.embedded:
        raise click.UsageError(
            "the dispatcher needs MSS_BROKER_URL; embedded, `mss-jobs api` runs one"
        )
    _log_to_stderr("INFO")
    try:
        ensure_current(settings.database_url, upgrade_if_behind=False)
    except MssError as exc:
        raise click.ClickException(str(exc)) from exc
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


COMMANDS: tuple[click.Command, ...] = (
    api_cmd,
    worker_cmd,
    flower_cmd,
    migrate_cmd,
    submit_cmd,
    status_cmd,
    batch_group,
    dispatcher_cmd,
)
