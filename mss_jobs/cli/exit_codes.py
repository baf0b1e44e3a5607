"""The one map from what went wrong to the exit status of `mss-jobs`, and the group that applies it.

Every command raises; none picks a number. `exit_code` is the map, `MssGroup` (the class of
`mss-jobs` and of its sub-groups) turns whatever escapes a command into one line on stderr and
that status. Click's own usage errors (bad option or argument) keep click's status 2 and text.

    0    ok
    1    FAILED       the work ran and failed: a failed job, a failed track in `separate`, a
                      failed model download in `models pull`, rejected batch rows or failed
                      tracks after `batch submit --wait`; a job or batch that does not exist
                      (HTTP 404); any other `MssError`
    2    USAGE        a bad option or argument (click), invalid settings or a request the
                      service refused as invalid (`ConfigError`, HTTP 4xx but 404), the worker
                      extra missing for a command that separates
    3    UNAVAILABLE  the API, broker, database or storage cannot be reached or is failing
                      (`TransientError`, HTTP 5xx but 500 and `storage.failed`, connection errors)
    130  INTERRUPTED  Ctrl-C (KeyboardInterrupt) in a command doing work; the servers (`api`,
                      `worker`, `flower`, `dispatcher`) stop on Ctrl-C and exit 0

Anything else is a bug: its traceback and Python's status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any, Final

import click

from mss_jobs.errors import ApiError, ConfigError, MssError, TransientError

__all__ = [
    "EXIT_CODES_HELP",
    "WORKER_EXTRA_MODULES",
    "CommandError",
    "ExitCode",
    "MssGroup",
    "exit_code",
    "messages_without_code",
    "option_error",
    "reported",
]


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNAVAILABLE = 3
    INTERRUPTED = 130


EXIT_CODES_HELP: Final = """\b
Exit codes:
  0    ok
  1    a job or track failed (the work ran and failed); no such job or batch
  2    usage: bad option or argument, invalid settings, a request the service
       refused as invalid, the worker extra missing
  3    service unavailable: API, broker, database or storage unreachable
  130  interrupted (Ctrl-C)"""
"""The `mss-jobs --help` epilog (`\\b`: click keeps the lines as they are)."""

WORKER_EXTRA_MODULES: Final = frozenset(
    {"torch", "torchaudio", "numpy", "soundfile", "av", "demucs", "safetensors", "yaml"}
)
"""Top-level modules only the `worker` extra installs: separation needs them, the slim set lacks."""

WORKER_EXTRA_HINT: Final = "pip install 'mss-jobs[worker]'"

# Foreign errors that mean a dependency is down, by (module, class, code printed). Looked up in
# sys.modules: an error of a class can only exist once its module is imported, so the CLI imports
# none of these to classify.
_UNREACHABLE: Final = (
    ("httpx", "TransportError", "api.unavailable"),
    ("sqlalchemy.exc", "OperationalError", "database.unavailable"),
    ("sqlalchemy.exc", "InterfaceError", "database.unavailable"),
    ("kombu.exceptions", "OperationalError", "broker.unavailable"),
    ("redis.exceptions", "ConnectionError", "broker.unavailable"),
    ("redis.exceptions", "TimeoutError", "broker.unavailable"),
    ("builtins", "ConnectionError", "unavailable"),
    ("builtins", "TimeoutError", "unavailable"),
)
_HTTP_NOT_FOUND: Final = 404
_HTTP_INTERNAL: Final = 500


def exit_code(exc: BaseException) -> ExitCode:
    """The exit status for `exc` escaping a command: the map of this module's docstring."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, click.UsageError):
        return ExitCode.USAGE
    if isinstance(exc, ApiError):
        return _http_exit_code(exc.status, exc.code)
    if isinstance(exc, ConfigError):
        return ExitCode.USAGE
    if isinstance(exc, TransientError):
        return ExitCode.UNAVAILABLE
    if _missing_worker_module(exc) is not None:
        return ExitCode.USAGE
    if _unreachable_code(exc) is not None:
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


def _http_exit_code(status: int, code: str) -> ExitCode:
    """An error answer of the API: the service's verdict on the request, by HTTP status."""
    if status == _HTTP_NOT_FOUND:
        return ExitCode.FAILED  # the job/batch/output asked for is not there
    if status < _HTTP_INTERNAL:
        return ExitCode.USAGE  # 400, 409, 413, 422: the request was refused as it stands
    if status == _HTTP_INTERNAL or code == "storage.failed":
        return ExitCode.FAILED  # a bug in the service, or storage refusing for good (502)
    return ExitCode.UNAVAILABLE  # 503 (broker, database, storage down), 502/504 from a proxy


def _missing_worker_module(exc: BaseException) -> str | None:
    """The worker-extra module whose absence `exc` reports (the slim install), else None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    root = exc.name.split(".", 1)[0]
    return root if root in WORKER_EXTRA_MODULES else None


def _unreachable_code(exc: BaseException) -> str | None:
    for module, name, code in _UNREACHABLE:
        kind = _loaded(module, name)
        if kind is not None and isinstance(exc, kind):
            return code
    return None


def _loaded(module: str, name: str) -> type[BaseException] | None:
    found: Any = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


class CommandError(click.ClickException):
    """One line on stderr (`Error: …`) and the class's status; `reported` picks the class."""

    exit_code = ExitCode.FAILED


class _UsageCommandError(CommandError):
    exit_code = ExitCode.USAGE


class _UnavailableCommandError(CommandError):
    exit_code = ExitCode.UNAVAILABLE


_ERROR_CLASSES: Final[dict[ExitCode, type[CommandError]]] = {
    ExitCode.USAGE: _UsageCommandError,
    ExitCode.UNAVAILABLE: _UnavailableCommandError,
}


def reported(message: str, status: ExitCode) -> CommandError:
    """The error that prints `message` and exits with `status` (1, 2 or 3)."""
    return _ERROR_CLASSES.get(status, CommandError)(message)


def command_error(exc: BaseException, *, command: str) -> CommandError | None:
    """The report of `exc` escaping `command` (`mss-jobs separate`); None for a bug (traceback)."""
    if isinstance(exc, MssError):
        return reported(f"{exc.code}: {exc}", exit_code(exc))
    module = _missing_worker_module(exc)
    if module is not None:
        return reported(
            f"`{command}` needs the worker extra: {WORKER_EXTRA_HINT} (no module named {module!r})",
            ExitCode.USAGE,
        )
    code = _unreachable_code(exc)
    if code is not None:
        return reported(f"{code}: {_first_line(exc)}", ExitCode.UNAVAILABLE)
    return None


def _first_line(exc: BaseException) -> str:
    """The driver's own words where a wrapper holds them (SQLAlchemy's `orig`), first line."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def messages_without_code() -> Iterator[None]:
    """Report an `MssError` by its message alone, with the map's status.

    For the errors whose message already says everything: invalid settings (it names the
    variable), a database schema behind the code, Flower's refusals.
    """
    try:
        yield
    except MssError as exc:
        raise reported(str(exc), exit_code(exc)) from exc


def option_error(exc: MssError) -> click.ClickException:
    """An error in what the options ask for, found before any work (model, stems, format):
    click's usage error (status 2, `code: message`), unless a dependency is down (status 3)."""
    if isinstance(exc, TransientError):
        return reported(f"{exc.code}: {exc}", ExitCode.UNAVAILABLE)
    return click.UsageError(f"{exc.code}: {exc}")


class MssGroup(click.Group):
    """A click group that reports what escapes its commands through the map (`exit_code`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("\nAborted!", err=True)
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:
            path = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            error = command_error(exc, command=path)
            if error is None:
                raise
            raise error from exc
