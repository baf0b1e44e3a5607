"""The `mss-jobs` command line: one module per command, thin wiring over the library.

    separate     `separate.py`   the pipeline on files, no job system (worker extra)
    models       `models.py`     list, show, pull models
    demo-track   `demo.py`       a synthesized demo mix (worker extra)
    api          `api.py`        the HTTP API (with an embedded worker when no broker is set)
    worker       `worker.py`     a Celery worker (worker extra)
    flower       `flower.py`     Celery monitoring
    migrate      `migrate.py`    the database schema
    dispatcher   `dispatcher.py` the batch dispatcher alone
    submit       `submit.py`     one track as a job, through the API
    status       `status.py`     one job
    batch        `batch.py`      submit, status, report, cancel, retry batches

`_common.py` holds the shared options, settings loading and the API client (remote, or a private
API for the command's duration); `exit_codes.py` the one map from errors to exit codes.

Importing the CLI imports no torch: the slim (API-only) install runs `api`, `dispatcher`,
`flower`, `migrate`, `submit`, `status` and `batch`; the commands that separate import the
pipeline when they run, and in the slim install exit 2 saying they need the worker extra.

Exit codes (`exit_codes.ExitCode`; also in `mss-jobs --help` and the README):

    0    ok
    1    the work ran and failed: a failed job (`submit`), a failed track (`separate`), a failed
         download (`models pull`), rejected rows or failed tracks (`batch submit --wait`); or
         the job or batch asked for does not exist (HTTP 404)
    2    usage: a bad option or argument, invalid settings (`ConfigError`), a request the
         service refused as invalid (HTTP 4xx), the worker extra missing
    3    service unavailable: the API, broker, database or storage cannot be reached or is
         failing (`TransientError`, HTTP 502/503/504, connection errors)
    130  interrupted by Ctrl-C (the servers `api`, `worker`, `flower`, `dispatcher` stop on
         Ctrl-C and exit 0)
"""

from __future__ import annotations

import click

from mss_jobs.cli import (
    api,
    batch,
    demo,
    dispatcher,
    flower,
    migrate,
    models,
    separate,
    status,
    submit,
    worker,
)
from mss_jobs.cli.exit_codes import EXIT_CODES_HELP, MssGroup

__all__ = ["main"]


@click.group(
    "mss-jobs",
    cls=MssGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="mss-jobs")
def main() -> None:
    """Music source separation: split tracks into stems."""


for _command in (
    separate.separate,
    models.models_group,
    demo.demo_track,
    api.api,
    worker.worker,
    flower.flower,
    migrate.migrate,
    submit.submit,
    status.status,
    batch.batch_group,
    dispatcher.dispatcher,
):
    main.add_command(_command)
