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
from collections.abc import Iterator, Mapping
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

api_option = click.option(
    "--api",
    "api_url",
    envvar=API_URL_VARIABLE,
    default=None,
    metavar="URL",
    help=f"API base URL (env {API_URL_VARIABLE}). Default: serve one in this process "
    "from the MSS_* settings (with an embedded worker when no broker is set).",
)


@contextmanager
def cli_errors(*, with_code: bool = True) -> Iterator[None]:
    """Turn an `MssError` into click's error exit (code 1) with one line: `code: message`."""
    try:
        yield
    except MssError as exc:
        raise click.ClickException(f"{exc.code}: {exc}" if with_code else str(exc)) from exc


def cli_settings() -> Settings:
    with cli_errors(with_code=False):
        return load_settings()


def log_to_stderr(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def request_spec(
    options: Mapping[str, Any],
    *,
    fmt: str | None,
    bit_depth: str | None,
    stems: str | None,
    derive: tuple[str, ...],
    lane: str | None,
    force: bool,
) -> dict[str, Any]:
    """The JobSpec fields a submit command's options set (unset ones are left to the service)."""
    fields: dict[str, Any] = {
        **options,
        "format": fmt,
        "bit_depth": int(bit_depth) if bit_depth else None,
        "stems": [s.strip() for s in stems.split(",") if s.strip()] if stems else None,
        "derived": list(derive) or None,
        "queue": lane,
        "force": force or None,
    }
    return {key: value for key, value in fields.items() if value is not None}


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
def api_client(api_url: str | None, *, run_jobs: bool) -> Iterator[JobsClient]:
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
        _service_app(cli_settings(), run_jobs=run_jobs) as app,
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

    settings = cli_settings()
    log_to_stderr(log_level)
    with cli_errors(), _service_app(settings, run_jobs=True) as app:
        mode = "embedded worker, in-memory queue" if settings.embedded else "broker"
        click.echo(f"mss-jobs API on http://{host}:{port} ({mode}); docs at /docs", err=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower())


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
    settings = cli_settings()
    if settings.embedded:
        raise click.UsageError(
            "no broker configured: set MSS_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run "
            "workers; without one, `mss-jobs api` and `mss-jobs submit` run jobs in-process"
        )
    from mss_jobs.db.migrate import ensure_current
    from workers.app import create_app

    with cli_errors(with_code=False):
        ensure_current(settings.database_url, upgrade_if_behind=False)
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

    with cli_errors(with_code=False):
        run_flower(cli_settings(), address=address, port=port, extra=flower_args)


@click.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Upgrade target.")
@click.option("--downgrade", "down_to", default=None, metavar="REV", help="Downgrade to REV.")
def migrate_cmd(revision: str, down_to: str | None) -> None:
    """Bring the database schema to the code's (Alembic upgrade head)."""
    from mss_jobs.db import migrate

    url = cli_settings().database_url
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
@api_option
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
    spec = request_spec(
        options,
        fmt=fmt,
        bit_depth=bit_depth,
        stems=stems,
        derive=derive,
        lane=lane,
        force=force,
    )
    is_uri = "://" in source
    local = Path(source)
    if not is_uri and not local.is_file():
        raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    if no_wait and not api_url and cli_settings().embedded:
        raise click.UsageError(
            "--no-wait needs a service that outlives this command: pass --api URL (a running "
            "`mss-jobs api`) or set MSS_BROKER_URL"
        )
    track = Path(source.rsplit("/", 1)[-1]).stem or "track"
    destination = out_dir or Path("stems") / track
    with cli_errors(), api_client(api_url, run_jobs=True) as client:
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
    click.echo(f"{source} → {destination}/ ({', '.join(p.name for p in paths)}) [job {job.id}]")


@click.command("status")
@click.argument("job_id", type=click.UUID)
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def status_cmd(job_id: Any, api_url: str | None, as_json: bool) -> None:
    """Show a job: status, progress, error and its stems."""
    with cli_errors(), api_client(api_url, run_jobs=False) as client:
        job = client.job(job_id)
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


COMMANDS: tuple[click.Command, ...] = (
    api_cmd,
    worker_cmd,
    flower_cmd,
    migrate_cmd,
    submit_cmd,
    status_cmd,
)
"""The job-system commands; `mss_jobs.cli` adds them, and the batch ones from `cli_batches`."""
