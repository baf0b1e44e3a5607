"""`mss-jobs status`: one job as the API reports it."""

from __future__ import annotations

import uuid

import click

from mss_jobs.cli._common import api_option, fetched, option

__all__ = ["status"]


@click.command("status")
@click.argument("job_id", type=click.UUID)
@api_option
@option("json", help="Print the job as JSON.")
def status(job_id: uuid.UUID, api_url: str | None, as_json: bool) -> None:
    """Show a job: status, progress, error and its stems."""
    job = fetched(api_url, lambda client: client.job(job_id), as_json=as_json)
    if job is None:
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
