"""What the commands share: their options, settings, the API client and progress bars.

The client commands (`submit`, `status`, `batch …`) speak HTTP to an API: the one at `--api` (or
`MSS_API_URL`), or, without one, a private API served on a loopback port for the command's own
duration — with the embedded worker when no broker is configured. Either way a job takes the
production path: row committed → job id published → Celery task → storage → outputs → download
over HTTP.

Nothing here imports torch, nor the API, the database or Celery before a command needs them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

import click

from mss_jobs.cli.exit_codes import messages_without_code
from mss_jobs.domain.lifecycle import LANES, MAX_PRIORITY, MIN_PRIORITY
from mss_jobs.domain.units import WINDOW_SHAPES, BitDepth, OutputFormat
from mss_jobs.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel
    from tqdm import tqdm

    from mss_jobs.client import JobsClient

__all__ = [
    "API_URL_VARIABLE",
    "api_client",
    "api_option",
    "cli_settings",
    "fetched",
    "log_to_stderr",
    "option",
    "output_options",
    "progress_bar",
    "request_spec",
    "require_lasting_service",
]

FC = TypeVar("FC", bound=Callable[..., Any])

API_URL_VARIABLE: Final = "MSS_API_URL"


def _bit_depth(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return int(value) if value else None


def _stem_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


# Every option more than one command takes, or that a command takes in a family with others:
# its declarations and attributes, stated once. `option(name, help=…)` adjusts one per command.
_OPTIONS: Final[dict[str, tuple[tuple[str, ...], dict[str, Any]]]] = {
    "api": (
        ("--api", "api_url"),
        {
            "envvar": API_URL_VARIABLE,
            "default": None,
            "metavar": "URL",
            "help": f"API base URL (env {API_URL_VARIABLE}). Default: serve one in this process "
            "from the MSS_* settings (with an embedded worker when no broker is set).",
        },
    ),
    "model": (("--model",), {"default": None}),
    "stems": (
        ("--stems",),
        {
            "default": None,
            "callback": _stem_list,
            "help": "Comma-separated stems to keep (default all).",
        },
    ),
    "derive": (
        ("--derive",),
        {"multiple": True, "metavar": "NAME=A-B|A+B", "help": "Derived stem, repeatable."},
    ),
    "format": (
        ("--format", "fmt"),
        {"type": click.Choice(get_args(OutputFormat)), "default": None},
    ),
    "bit-depth": (
        ("--bit-depth",),
        {
            "type": click.Choice([str(bits) for bits in get_args(BitDepth)]),
            "default": None,
            "callback": _bit_depth,
        },
    ),
    "sample-rate": (("--sample-rate",), {"type": click.IntRange(min=1), "default": None}),
    "chunk-seconds": (
        ("--chunk-seconds",),
        {"type": click.FloatRange(min=0, min_open=True), "default": None},
    ),
    "overlap": (("--overlap",), {"type": click.FloatRange(0, 1, max_open=True), "default": None}),
    "window": (("--window",), {"type": click.Choice(WINDOW_SHAPES), "default": None}),
    "batch-size": (("--batch-size",), {"type": click.IntRange(min=1), "default": None}),
    "priority": (
        ("--priority",),
        {"type": click.IntRange(MIN_PRIORITY, MAX_PRIORITY), "default": None},
    ),
    "queue": (("--queue", "lane"), {"type": click.Choice(LANES), "default": None}),
    "force": (
        ("--force",),
        {"is_flag": True, "help": "Separate even when an identical result exists."},
    ),
    "quiet": (("--quiet", "-q"), {"is_flag": True, "help": "No progress bar."}),
    "json": (("--json", "as_json"), {"is_flag": True}),
}


def option(name: str, **changes: Any) -> Callable[[FC], FC]:
    """The shared option `name` (`_OPTIONS`), with `changes` to its attributes."""
    declarations, attributes = _OPTIONS[name]
    return click.option(*declarations, **{**attributes, **changes})


def output_options(changes: Mapping[str, Mapping[str, Any]] | None = None) -> Callable[[FC], FC]:
    """`--stems --derive --format --bit-depth --sample-rate`, in that order; `changes` maps an
    option's name to the attributes it takes differently for this command."""

    def apply(command: FC) -> FC:
        for name in reversed(("stems", "derive", "format", "bit-depth", "sample-rate")):
            command = option(name, **(changes or {}).get(name, {}))(command)
        return command

    return apply


api_option: Final = option("api")

_REQUEST_FIELDS: Final = {"fmt": "format", "derive": "derived", "lane": "queue"}


def request_spec(options: Mapping[str, Any]) -> dict[str, Any]:
    """The request body fields (JobSpec, BatchCreate) that a command's options set.

    Options left unset (None, a flag not given, nothing repeated) are left to the service.
    """
    return {
        _REQUEST_FIELDS.get(name, name): list(value) if isinstance(value, tuple) else value
        for name, value in options.items()
        if not (value is None or value is False or value == ())
    }


def cli_settings() -> Settings:
    """The settings from the environment; invalid ones exit 2 with the message naming them."""
    with messages_without_code():
        return load_settings()


def log_to_stderr(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def require_lasting_service(api_url: str | None, refusal: str) -> None:
    """Refuse (usage, 2) work that must outlive this command when the only API would be ours."""
    if not api_url and cli_settings().embedded:
        raise click.UsageError(refusal)


def progress_bar(**attributes: Any) -> tqdm[Any]:
    """A tqdm bar on stderr that leaves no line behind when closed."""
    from tqdm import tqdm

    return tqdm(**{"leave": False, "file": sys.stderr, **attributes})


@contextmanager
def service_app(settings: Settings, *, run_jobs: bool) -> Iterator[FastAPI]:
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


M = TypeVar("M", bound="BaseModel")


def fetched(api_url: str | None, fetch: Callable[[JobsClient], M], *, as_json: bool) -> M | None:
    """What `fetch` reads from the API; with `as_json` printed here as JSON and None returned."""
    with api_client(api_url, run_jobs=False) as client:
        found = fetch(client)
    if not as_json:
        return found
    click.echo(json.dumps(found.model_dump(mode="json"), indent=2))
    return None


@contextmanager
def api_client(api_url: str | None, *, run_jobs: bool) -> Iterator[JobsClient]:
    """A client of the API at `api_url`, or of a private one served for the block's duration."""
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
        service_app(cli_settings(), run_jobs=run_jobs) as app,
        serve_in_thread(app) as url,
        JobsClient(url, trust_env=False) as client,
    ):
        yield client
