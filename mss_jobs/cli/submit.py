"""`mss-jobs submit`: one track as a job, followed to its end, its stems downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mss_jobs.cli._common import (
    api_client,
    api_option,
    option,
    output_options,
    progress_bar,
    request_spec,
    require_lasting_service,
)
from mss_jobs.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from tqdm import tqdm

    from mss_jobs.api.schemas import JobOut

__all__ = ["submit"]


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
@option("model", help="Model name (default: the service's).")
@output_options()
@option("chunk-seconds")
@option("overlap")
@option("priority", help="0..9, 9 most urgent.")
@option("queue")
@click.option("--idempotency-key", default=None, help="Same key → same job, never a second one.")
@option("force")
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
@option("quiet")
def submit(
    source: str,
    out_dir: Path | None,
    api_url: str | None,
    idempotency_key: str | None,
    no_wait: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Submit SOURCE (a local audio file, uploaded; or s3://bucket/key) as a job, wait for it
    and download its stems. Exit code 1 if the job fails."""
    spec = request_spec(options)
    is_uri = "://" in source
    local = Path(source)
    if not is_uri and not local.is_file():
        raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    if no_wait:
        require_lasting_service(
            api_url,
            "--no-wait needs a service that outlives this command: pass --api URL (a running "
            "`mss-jobs api`) or set MSS_BROKER_URL",
        )
    track = Path(source.rsplit("/", 1)[-1]).stem or "track"
    destination = out_dir or Path("stems") / track
    with api_client(api_url, run_jobs=True) as client:
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
            raise click.exceptions.Exit(ExitCode.FAILED)
        paths = client.download(job, destination)
    click.echo(f"{source} → {destination}/ ({', '.join(p.name for p in paths)}) [job {job.id}]")


class _ProgressBar:
    """A tqdm bar in percent, relabelled with the job's stage as it moves."""

    def __init__(self, label: str) -> None:
        self.label = Path(label).name
        self.bar: tqdm[Any] | None = None

    def __call__(self, job: JobOut) -> None:
        if self.bar is None:
            self.bar = progress_bar(total=100, unit="%")
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
