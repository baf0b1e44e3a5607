"""Edge: Flower, the Celery monitor, run for the worker app built from our settings.

    mss-jobs flower [--address 127.0.0.1] [--port 5555] [FLOWER OPTIONS...]   → run_flower
    celery -A workers.app flower --address=127.0.0.1 --port=5555              (raw Flower)

Flower builds its picture from Celery events (`task-sent` from the API, `task-received`,
`task-started`, `task-succeeded` … from workers, all enabled by `mss_jobs.queueing` and
`workers.app`) and from remote-control `inspect` calls, so it needs a real broker: in embedded
mode (no `MSS_BROKER_URL`) there are no events to watch and `run_flower` raises `ConfigError`.
Each task is `mss_jobs.separate` with one argument, the job id; the task list gets the `args`
and `result` columns by default so the job id and the job's outcome are visible (a job that
failed permanently is a task that *succeeded* with result `'failed'`).

Access policy. Flower 2 answers its HTTP API (`/api/...`) only with authentication configured
(`--basic_auth`, or `--auth` with OAuth) or with `FLOWER_UNAUTHENTICATED_API` set; its HTML pages
are open without authentication. Our defaults, in order of safety:

- Listen on 127.0.0.1 (Flower's own default is every interface).
- Loopback address, no authentication: the API is enabled (`FLOWER_UNAUTHENTICATED_API=true`
  unless the operator set that variable) so local scripts and tests can read it.
- Any other address without authentication: the API stays off; turning it on there with
  `FLOWER_UNAUTHENTICATED_API` is refused (`ConfigError`), because everyone who can reach the
  port could then drive the workers. The pages stay readable, and a warning is logged.
- Without authentication Flower is read-only by default (`--read_only=True`): it disables
  shutdowns, pool changes, revokes and task sending. Unauthenticated Flower also sends
  `Access-Control-Allow-Origin: *` and skips its CSRF check, so on a loopback port any web page
  the operator's browser opens could otherwise post to it. `--read_only=False` overrides.

Options are validated here because Flower silently drops ones it does not know: a mistyped
`--basic-auth` would otherwise leave the instance open. Where Flower listens is ours
(`address`/`port`), so `--address`, `--port` and `--unix_socket` are refused in `extra` and in
the environment (`FLOWER_ADDRESS` …). Authentication in a Flower config file (`--conf`) is not
seen here; such setups pass `--read_only=False` themselves.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from flower.options import default_options  # type: ignore[import-untyped]

from mss_jobs.errors import ConfigError
from mss_jobs.settings import Settings, env_var
from workers.app import create_app

__all__ = [
    "DEFAULT_TASK_COLUMNS",
    "UNAUTHENTICATED_API_ENV",
    "FlowerAccess",
    "flower_access",
    "flower_argv",
    "run_flower",
]

log = logging.getLogger(__name__)

UNAUTHENTICATED_API_ENV: Final = "FLOWER_UNAUTHENTICATED_API"
"""Flower 2's switch that opens its HTTP API without authentication."""

DEFAULT_TASK_COLUMNS: Final = (
    "name,uuid,state,args,result,routing_key,received,started,runtime,retries,worker"
)
"""Flower's default list lacks `args` (the job id), `result` (the job's outcome: "succeeded",
"failed", "cancelled", "skipped") and `routing_key` (the queue: interactive or bulk)."""

_ENV_PREFIX: Final = "FLOWER_"
_AUTH_OPTIONS: Final = ("basic_auth", "auth")
"""The options whose presence makes Flower require authentication (pages and API)."""
_LISTEN_OPTIONS: Final = ("address", "port", "unix_socket")
_TRUE_WORDS: Final = frozenset({"y", "yes", "t", "true", "on", "1"})
"""What Flower's own `strtobool` reads as true."""


@dataclass(frozen=True, slots=True)
class FlowerAccess:
    """Who can reach Flower, as far as this process can tell."""

    loopback: bool
    """The listening address is a loopback address (or `localhost`)."""
    authenticated: bool
    """Basic auth or OAuth is configured through `extra` or `FLOWER_*` variables."""

    @property
    def unauthenticated_api(self) -> bool:
        """Whether to open the HTTP API without authentication: only on loopback."""
        return self.loopback and not self.authenticated


def flower_access(
    *, address: str, extra: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> FlowerAccess:
    """The access situation of a Flower on `address` with options `extra` and `environ`.

    Raises `ConfigError` when `FLOWER_UNAUTHENTICATED_API` asks for an open API on a
    non-loopback address without authentication.
    """
    environ = os.environ if environ is None else environ
    options = _parse_options(extra)
    authenticated = any(options.get(name) or environ.get(_env_name(name)) for name in _AUTH_OPTIONS)
    access = FlowerAccess(loopback=_is_loopback(address), authenticated=authenticated)
    asked = environ.get(UNAUTHENTICATED_API_ENV, "")
    if not access.loopback and not authenticated and asked.strip().lower() in _TRUE_WORDS:
        raise ConfigError(
            f"{UNAUTHENTICATED_API_ENV}={asked} would open Flower's API to anyone who can "
            f"reach {address!r}: bind 127.0.0.1, or configure --basic_auth=user:password "
            "(or --auth with OAuth)"
        )
    return access


def flower_argv(
    settings: Settings,
    *,
    address: str = "127.0.0.1",
    port: int = 5555,
    extra: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Arguments of the `celery` command line that runs Flower: `["flower", "--address=…", …]`.

    `extra` are Flower options (`--name=value`, or `--flag` for a boolean); they come last, so
    they override our defaults. `port` 0 takes any free port (Flower logs the one it got).
    `environ` (default `os.environ`) is consulted for `FLOWER_*` variables. Raises
    `ConfigError` without a broker, for a bad address or port, an unknown or listening option,
    or an unsafe `FLOWER_UNAUTHENTICATED_API` (see the module docstring).
    """
    environ = os.environ if environ is None else environ
    address = address.strip()
    if settings.broker_url is None:
        raise ConfigError(
            f"Flower watches a broker and there is none (embedded mode): set "
            f"{env_var('broker_url')} (e.g. redis://127.0.0.1:6379/0)"
        )
    if not address:
        raise ConfigError("Flower needs an address to listen on, e.g. 127.0.0.1 (or 0.0.0.0)")
    if not 0 <= port <= 65535:
        raise ConfigError(f"Flower {port=} must be in [0, 65535] (0: any free port)")
    options = _parse_options(extra)
    for name in _LISTEN_OPTIONS:
        if name in options or _env_name(name) in environ:
            raise ConfigError(
                f"Flower's --{name} (or {_env_name(name)}) is not accepted here: where Flower "
                "listens is set by the address and port parameters"
            )
    access = flower_access(address=address, extra=extra, environ=environ)

    defaults = {"tasks_columns": DEFAULT_TASK_COLUMNS}
    if not access.authenticated:
        defaults["read_only"] = "True"
    argv = ["flower", f"--address={address}", f"--port={port}"]
    argv += [
        f"--{name}={value}"
        for name, value in defaults.items()
        if name not in options and _env_name(name) not in environ
    ]
    return argv + list(extra)


def run_flower(
    settings: Settings,
    *,
    address: str = "127.0.0.1",
    port: int = 5555,
    extra: Sequence[str] = (),
) -> None:
    """Run Flower in this process for the worker app built from `settings`, until SIGINT/SIGTERM.

    Opens the HTTP API without authentication only on a loopback address (by setting
    `FLOWER_UNAUTHENTICATED_API` in this process's environment, which Flower reads per
    request); see the module docstring. Raises `ConfigError` as `flower_argv` does.
    """
    argv = flower_argv(settings, address=address, port=port, extra=extra)
    access = flower_access(address=address, extra=extra)
    if access.unauthenticated_api:
        os.environ.setdefault(UNAUTHENTICATED_API_ENV, "true")
    elif not access.authenticated:
        log.warning(
            "Flower on %s without authentication: its pages (job ids, workers) are readable "
            "by anyone who can reach the port, and its API is off; consider --basic_auth",
            address,
        )
    status = create_app(settings).start(argv)
    if status:  # a click `Exit` (Celery returns its code instead of exiting)
        raise SystemExit(status)


def _parse_options(extra: Sequence[str]) -> dict[str, str]:
    """`--name=value` / `--flag` arguments → {normalized name: last value} ("" for a flag)."""
    # Messages name the option, never its value: values may be passwords.
    options: dict[str, str] = {}
    for position, argument in enumerate(extra, start=1):
        if not argument.startswith("--") or len(argument) == 2:
            raise ConfigError(
                f"Flower takes --name=value options only; extra argument {position} is not one "
                "(write --basic_auth=user:password, not --basic_auth user:password)"
            )
        raw_name, _, value = argument[2:].partition("=")
        name = raw_name.replace("-", "_")
        if name not in default_options:
            raise ConfigError(
                f"--{raw_name} is not a Flower option (Flower would ignore it silently); "
                "see `celery flower --help`"
            )
        options[name] = value
    return options


def _env_name(option: str) -> str:
    return f"{_ENV_PREFIX}{option.upper()}"


def _is_loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip()).is_loopback
    except ValueError:  # a host name: it may resolve to anything, so not loopback
        return False
