"""Every exit code of `mss-jobs` (`mss_jobs.cli.exit_codes`), driven through click's runner and
real processes: against a stub API (canned answers on a loopback port, no job system behind it),
against nothing at all (a closed port), and in a process with the worker extra made unimportable.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import mss_jobs.cli as cli_package
from mss_jobs.cli import main
from mss_jobs.cli.exit_codes import WORKER_EXTRA_MODULES, ExitCode, MssGroup, exit_code
from mss_jobs.errors import (
    ApiError,
    ApiUnavailableError,
    AudioDecodeError,
    ConfigError,
    PermanentError,
    StorageUnavailableError,
    UnknownModelError,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "3f2b8f0e-7d7a-4c55-9a57-2f7c1f4f9a10"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


# --- a stub API: canned answers per (method, path) -----------------------------------------------


class StubApi:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                status, body = stub.answers.get(
                    (self.command, self.path.split("?")[0]), (500, {"detail": "no answer set"})
                )
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def error(self, method: str, path: str, status: int, code: str, message: str) -> None:
        self.answers[(method, path)] = (status, {"error": {"code": code, "message": message}})


@pytest.fixture
def stub_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubApi]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    stub = StubApi()
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()


def _job(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "status": status,
        "model": "dsp-hpss",
        "params": {},
        "input": "s3://bucket/song.flac",
        "priority": 5,
        "progress": 0.0,
        "stage": None,
        "attempts": 1,
        "error": None,
        "idempotency_key": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        **fields,
    }


# --- 0: ok, and the codes are documented -------------------------------------------------------


def test_help_exits_0_and_lists_every_exit_code() -> None:
    result = _invoke("--help")
    assert result.exit_code == ExitCode.OK
    epilog = result.output.split("Exit codes:", 1)[1]
    readme = (ROOT / "README.md").read_text()
    table = readme.split("Every command exits with one of these codes", 1)[1].split("\n\n")[1]
    docstring = (cli_package.__doc__ or "").split("Exit codes", 1)[1]
    for code in ExitCode:
        assert re.search(rf"^\s+{code.value}\s", epilog, re.MULTILINE), code
        assert f"| {code.value} |" in table, code
        assert re.search(rf"^\s+{code.value}\s", docstring, re.MULTILINE), code


def test_a_job_the_api_reports_succeeded_exits_0(stub_api: StubApi) -> None:
    stub_api.answers[("GET", f"/v1/jobs/{JOB_ID}")] = (200, _job("succeeded", progress=1.0))
    result = _invoke("status", JOB_ID, "--api", stub_api.url)
    assert result.exit_code == ExitCode.OK, result.output
    assert "succeeded" in result.stdout


# --- 1: the work ran and failed ----------------------------------------------------------------


def test_a_failed_job_exits_1(stub_api: StubApi, tmp_path: Path) -> None:
    stub_api.answers[("POST", "/v1/jobs")] = (202, _job("queued"))
    error = {"code": "audio.decode_failed", "message": "song.flac: not a decodable audio file"}
    stub_api.answers[("GET", f"/v1/jobs/{JOB_ID}")] = (200, _job("failed", error=error))
    result = _invoke("submit", "s3://bucket/song.flac", "--api", stub_api.url, "-o", str(tmp_path))
    assert result.exit_code == ExitCode.FAILED
    assert f"error: job {JOB_ID} failed: audio.decode_failed: song.flac" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_job_that_does_not_exist_exits_1(stub_api: StubApi) -> None:
    stub_api.error("GET", f"/v1/jobs/{JOB_ID}", 404, "job.not_found", f"no job {JOB_ID}")
    result = _invoke("status", JOB_ID, "--api", stub_api.url)
    assert result.exit_code == ExitCode.FAILED
    assert "Error: job.not_found: HTTP 404" in result.stderr


# --- 2: usage -----------------------------------------------------------------------------------


def test_a_bad_option_exits_2() -> None:
    result = _invoke("status", "not-a-uuid")
    assert result.exit_code == ExitCode.USAGE
    assert "Invalid value for 'JOB_ID'" in result.stderr


@pytest.mark.parametrize(
    ("status", "code"),
    [(422, "model.unknown"), (422, "request.invalid"), (409, "idempotency.conflict")],
)
def test_a_request_the_service_refuses_as_invalid_exits_2(
    stub_api: StubApi, status: int, code: str
) -> None:
    stub_api.error("POST", "/v1/jobs", status, code, "refused")
    result = _invoke("submit", "s3://bucket/song.flac", "--api", stub_api.url, "--model", "nope")
    assert result.exit_code == ExitCode.USAGE
    assert f"Error: {code}: HTTP {status}: refused" in result.stderr


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    result = _invoke("migrate", env={"MSS_DATA_DIR": str(tmp_path), "MSS_STORAGE_BACKEND": "nope"})
    assert result.exit_code == ExitCode.USAGE
    assert "Error: invalid settings: MSS_STORAGE_BACKEND" in result.stderr
    listing = _invoke("models", env={"MSS_DATA_DIR": str(tmp_path), "MSS_STORAGE_BACKEND": "x"})
    assert listing.exit_code == ExitCode.USAGE


def test_an_unknown_migration_revision_exits_2(tmp_path: Path) -> None:
    result = _invoke("migrate", "--revision", "nope", env={"MSS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Invalid value for --revision" in result.stderr
    assert "nope" in result.stderr


# --- 3: service unavailable ---------------------------------------------------------------------


def test_an_unreachable_api_exits_3() -> None:
    result = _invoke("status", JOB_ID, "--api", f"http://127.0.0.1:{_free_port()}")
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert "Error: api.unavailable: cannot reach the API" in result.stderr


def test_a_service_answering_503_exits_3(stub_api: StubApi) -> None:
    stub_api.error("POST", "/v1/jobs", 503, "broker.unavailable", "the broker is down")
    result = _invoke("submit", "s3://bucket/song.flac", "--api", stub_api.url)
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert "Error: broker.unavailable: HTTP 503: the broker is down" in result.stderr


def test_an_unreachable_database_exits_3(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://mss@127.0.0.1:{_free_port()}/mss?connect_timeout=5"
    result = _invoke("migrate", env={"MSS_DATA_DIR": str(tmp_path), "MSS_DATABASE_URL": url})
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert "Error: database.unavailable: " in result.stderr
    assert "Traceback" not in result.output


# --- 130: Ctrl-C --------------------------------------------------------------------------------


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("mss_jobs.cli.models.cli_settings", interrupted)
    result = _invoke("models", "list")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "Aborted!" in result.stderr


def test_sigint_while_waiting_on_the_api_exits_130(tmp_path: Path) -> None:
    """A real process, a real SIGINT: `status` stuck on an API that accepts and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(60)
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "MSS_DATA_DIR": str(tmp_path)}
        api = f"http://127.0.0.1:{listener.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "mss_jobs", "status", JOB_ID, "--api", api],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = listener.accept()  # the request is on its way: the CLI now waits
            with connection:
                process.send_signal(signal.SIGINT)
                _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert "Aborted!" in stderr
    assert "Traceback" not in stderr


# --- the slim install: commands that need the worker extra say so ------------------------------

# The worker extra made unimportable: `import numpy` raises ModuleNotFoundError(name="numpy").
_SLIM = (
    f"import sys; sys.modules.update(dict.fromkeys({sorted(WORKER_EXTRA_MODULES)!r}))\n"
    "from mss_jobs.cli import main\n"
    "main(sys.argv[1:], prog_name='mss-jobs')"
)


def _slim(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSS_")}
    return subprocess.run(
        [sys.executable, "-c", _SLIM, *args],
        env={**env, "MSS_DATA_DIR": str(tmp_path / "data")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_slim_install_imports_the_cli_and_shows_help(tmp_path: Path) -> None:
    for args in (["--help"], ["batch", "--help"], ["submit", "--help"], ["separate", "--help"]):
        done = _slim(*args, tmp_path=tmp_path)
        assert done.returncode == ExitCode.OK, (args, done.stderr)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["separate", "song.wav", "-o", "out"], "mss-jobs separate"),
        (["demo-track", "demo.wav"], "mss-jobs demo-track"),
    ],
)
def test_a_command_needing_the_worker_extra_exits_2_saying_so(
    tmp_path: Path, args: list[str], command: str
) -> None:
    (tmp_path / "song.wav").write_bytes(b"")
    done = _slim(*args, tmp_path=tmp_path)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert (
        f"Error: `{command}` needs the worker extra: pip install 'mss-jobs[worker]'" in done.stderr
    )
    assert "Traceback" not in done.stderr


# --- the map itself, through a group of the same class ---------------------------------------


def _group_raising(exc: BaseException) -> click.Group:
    @click.group("tool", cls=MssGroup)
    def tool() -> None:
        pass

    @tool.group("outer", cls=MssGroup)
    def outer() -> None:
        pass

    @outer.command("inner")
    def inner() -> None:
        raise exc

    return tool


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (AudioDecodeError("bad bytes"), ExitCode.FAILED, "Error: audio.decode_failed: bad bytes"),
        (PermanentError("gone"), ExitCode.FAILED, "Error: permanent: gone"),
        (ConfigError("no such lane"), ExitCode.USAGE, "Error: config.invalid: no such lane"),
        (UnknownModelError("nope"), ExitCode.USAGE, "Error: model.unknown: nope"),
        (StorageUnavailableError("503"), ExitCode.UNAVAILABLE, "Error: storage.unavailable: 503"),
        (ApiUnavailableError("refused"), ExitCode.UNAVAILABLE, "Error: api.unavailable: refused"),
        (ConnectionRefusedError(111, "refused"), ExitCode.UNAVAILABLE, "Error: unavailable: "),
        (
            ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn"),
            ExitCode.USAGE,
            "Error: `tool outer inner` needs the worker extra: pip install 'mss-jobs[worker]' "
            "(no module named 'torch')",
        ),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED, "Aborted!"),
    ],
)
def test_each_error_gets_its_exit_code_and_one_line(
    exc: BaseException, status: ExitCode, line: str
) -> None:
    result = CliRunner().invoke(_group_raising(exc), ["outer", "inner"])
    assert result.exit_code == status
    assert line in result.stderr
    assert exit_code(exc) == status


def test_anything_else_is_a_bug_with_its_traceback() -> None:
    for exc in (ModuleNotFoundError("No module named 'mss_jobs.gone'", name="mss_jobs.gone"),):
        result = CliRunner().invoke(_group_raising(exc), ["outer", "inner"])
        assert result.exception is exc
        assert result.exit_code == ExitCode.FAILED


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "request.invalid", ExitCode.USAGE),
        (404, "batch.not_found", ExitCode.FAILED),
        (409, "batch.state_conflict", ExitCode.USAGE),
        (413, "upload.too_large", ExitCode.USAGE),
        (422, "config.invalid", ExitCode.USAGE),
        (500, "internal", ExitCode.FAILED),
        (502, "storage.failed", ExitCode.FAILED),
        (502, "api.error", ExitCode.UNAVAILABLE),
        (503, "database.unavailable", ExitCode.UNAVAILABLE),
        (504, "api.error", ExitCode.UNAVAILABLE),
    ],
)
def test_an_api_error_maps_by_its_http_status(status: int, code: str, expected: ExitCode) -> None:
    assert exit_code(ApiError("x", code=code, status=status)) == expected


def test_the_exit_code_of_the_process_is_the_maps(tmp_path: Path) -> None:
    """The console script itself: a status of 3 reaches the shell, not just click's runner."""
    exe = Path(sys.executable).with_name("mss-jobs")
    done = subprocess.run(
        [str(exe), "status", str(uuid.uuid4()), "--api", f"http://127.0.0.1:{_free_port()}"],
        env={**os.environ, "NO_PROXY": "127.0.0.1", "MSS_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert "api.unavailable" in done.stderr
