"""Flower (`workers.flower`): argument and access rules, then a real Flower watching a real worker.

The integration test runs `run_flower` in a subprocess on a free loopback port, a `celery worker`
subprocess and an `identity` job, all on Redis database 14 (the rest of the worker suite uses 13
and may run at the same time: Celery's event and control channels are per database), and reads
what operators would see through Flower's HTTP API.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from real_services import RedisServer, settings_from_env
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import REPO_ROOT, Submitter, WorkerProcess, wav_bytes

from mss_jobs.domain.lifecycle import JobStatus
from mss_jobs.errors import ConfigError
from mss_jobs.settings import Settings, load_settings
from mss_jobs.storage import S3Storage
from workers.app import create_app
from workers.flower import (
    DEFAULT_TASK_COLUMNS,
    UNAUTHENTICATED_API_ENV,
    FlowerAccess,
    flower_access,
    flower_argv,
    run_flower,
)
from workers.tasks import SEPARATE_TASK, enqueue

FLOWER_REDIS_INDEX = 14
"""Reserved for this module (flushed before and after)."""
FLOWER_REDIS_URL = f"redis://127.0.0.1:6379/{FLOWER_REDIS_INDEX}"
"""What the argv tests configure (they never connect)."""
START_TIMEOUT = 60.0
SUBSCRIBE_TIMEOUT = 30.0
API_TIMEOUT = 60.0
_BANNER = re.compile(r"Visit me at http://127\.0\.0\.1:(\d+)")


# -- flower_argv and the access policy (no services) ---------------------------------------------


@pytest.fixture
def broker_settings(tmp_path: Path) -> Settings:
    return load_settings(broker_url=FLOWER_REDIS_URL, data_dir=str(tmp_path))


def test_argv_listens_on_loopback_read_only_with_job_columns(broker_settings: Settings) -> None:
    argv = flower_argv(broker_settings, environ={})

    assert argv == [
        "flower",
        "--address=127.0.0.1",
        "--port=5555",
        f"--tasks_columns={DEFAULT_TASK_COLUMNS}",
        "--read_only=True",
    ]
    assert "args" in DEFAULT_TASK_COLUMNS.split(",")
    assert "result" in DEFAULT_TASK_COLUMNS.split(",")


def test_argv_passes_extra_options_last(broker_settings: Settings) -> None:
    argv = flower_argv(
        broker_settings,
        address="::1",
        port=0,
        extra=["--tasks-columns=name,args", "--max_tasks=10"],
        environ={},
    )

    assert argv == [
        "flower",
        "--address=::1",
        "--port=0",
        "--read_only=True",
        "--tasks-columns=name,args",
        "--max_tasks=10",
    ]


@pytest.mark.parametrize(
    ("extra", "environ"),
    [
        (["--basic_auth=ops:secret"], {}),
        (["--auth=.*@example\\.com", "--oauth2_key=k"], {}),
        ([], {"FLOWER_BASIC_AUTH": "ops:secret"}),
    ],
)
def test_argv_with_authentication_leaves_control_on(
    broker_settings: Settings, extra: list[str], environ: dict[str, str]
) -> None:
    argv = flower_argv(broker_settings, address="0.0.0.0", extra=extra, environ=environ)

    assert argv == [
        "flower",
        "--address=0.0.0.0",
        "--port=5555",
        f"--tasks_columns={DEFAULT_TASK_COLUMNS}",
        *extra,
    ]


def test_argv_keeps_operator_settings_from_the_environment(broker_settings: Settings) -> None:
    environ = {"FLOWER_READ_ONLY": "false", "FLOWER_TASKS_COLUMNS": "name,uuid"}

    argv = flower_argv(broker_settings, environ=environ)

    assert argv == ["flower", "--address=127.0.0.1", "--port=5555"]


def test_argv_without_a_broker_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(broker_url=None, data_dir=str(tmp_path))

    with pytest.raises(ConfigError, match="MSS_BROKER_URL"):
        flower_argv(settings, environ={})


def test_run_flower_without_a_broker_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(broker_url=None, data_dir=str(tmp_path))

    with pytest.raises(ConfigError, match="embedded mode"):
        run_flower(settings, address="127.0.0.1", port=0)


def test_refused_options_do_not_echo_their_values(broker_settings: Settings) -> None:
    for extra in (["--basicauth=ops:hunter2"], ["--basic_auth", "ops:hunter2"]):
        with pytest.raises(ConfigError) as refused:
            flower_argv(broker_settings, extra=extra, environ={})
        assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("extra", "environ", "message"),
    [
        (["--basicauth=ops:secret"], {}, "--basicauth is not a Flower option"),
        (["--broker=redis://elsewhere"], {}, "not a Flower option"),
        (["basic_auth=ops:secret"], {}, "--name=value options only"),
        (["--"], {}, "--name=value options only"),
        (["--port=6000"], {}, "--port"),
        (["--address=0.0.0.0"], {}, "--address"),
        (["--unix-socket=/tmp/flower.sock"], {}, "--unix_socket"),
        ([], {"FLOWER_PORT": "6000"}, "FLOWER_PORT"),
        ([], {"FLOWER_UNIX_SOCKET": "/tmp/f.sock"}, "FLOWER_UNIX_SOCKET"),
    ],
)
def test_argv_refuses_unknown_and_listening_options(
    broker_settings: Settings, extra: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        flower_argv(broker_settings, extra=extra, environ=environ)


@pytest.mark.parametrize(("address", "port"), [("", 5555), ("  ", 5555), ("127.0.0.1", 65536)])
def test_argv_refuses_bad_address_or_port(
    broker_settings: Settings, address: str, port: int
) -> None:
    with pytest.raises(ConfigError):
        flower_argv(broker_settings, address=address, port=port, environ={})


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("flower.internal", False),
    ],
)
def test_unauthenticated_api_only_on_loopback(address: str, loopback: bool) -> None:
    access = flower_access(address=address, environ={})

    assert access == FlowerAccess(loopback=loopback, authenticated=False)
    assert access.unauthenticated_api is loopback


def test_authenticated_access_never_needs_the_unauthenticated_api() -> None:
    access = flower_access(address="127.0.0.1", extra=["--basic-auth=a:b"], environ={})

    assert access.authenticated
    assert not access.unauthenticated_api


def test_open_api_on_a_network_address_without_auth_is_refused(broker_settings: Settings) -> None:
    environ = {UNAUTHENTICATED_API_ENV: "true"}

    with pytest.raises(ConfigError, match=UNAUTHENTICATED_API_ENV):
        flower_access(address="0.0.0.0", environ=environ)
    with pytest.raises(ConfigError, match=UNAUTHENTICATED_API_ENV):
        flower_argv(broker_settings, address="0.0.0.0", environ=environ)
    # with authentication Flower ignores the variable; on loopback it is our own default
    assert flower_access(address="0.0.0.0", extra=["--basic_auth=a:b"], environ=environ)
    assert flower_access(address="127.0.0.1", environ=environ).unauthenticated_api


# -- a real Flower watching a real worker ------------------------------------------------------


class FlowerProcess:
    """`run_flower` in a subprocess (own process group), logging to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MSS_", "AWS_", "HTTP", "FLOWER_"))
        }
        clean.update(env)
        clean.update(NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
        code = (
            "from mss_jobs.settings import load_settings\n"
            "from workers.flower import run_flower\n"
            "run_flower(load_settings(), address='127.0.0.1', port=0)\n"
        )
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=clean,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = START_TIMEOUT) -> str:
        """The base URL, once Flower logged the port it bound (port 0: no race for a port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"flower exited with {self.process.returncode}:\n{self.log()}")
            found = _BANNER.search(self.log())
            if found:
                self.url = f"http://127.0.0.1:{found.group(1)}"
                return self.url
            time.sleep(0.2)
        pytest.fail(f"flower did not start listening in {timeout} s:\n{self.log()}")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()  # Flower exits cleanly on SIGTERM
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def _wait_for(
    what: str, probe: Callable[[], Any], *, timeout: float, log: Callable[[], str]
) -> Any:
    """Call `probe` until it returns something truthy; fail with `log()` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.25)
    pytest.fail(f"{what} not seen within {timeout} s\n{log()}")


@pytest.fixture(scope="session")
def redis_db(redis_server: RedisServer) -> Iterator[str]:
    """Overrides the suite's database 13, which this module must not flush: other runs of the
    worker suite may be using it right now."""
    with redis_server.flushed(FLOWER_REDIS_INDEX) as url:
        yield url


@pytest.fixture(scope="module")
def flower_env(worker_env: dict[str, str], redis_db: str) -> dict[str, str]:
    """The session's services on this module's Redis database. `worker_env` may have been built
    with database 13 by an earlier module of the same session, hence the explicit broker."""
    return {**worker_env, "MSS_BROKER_URL": redis_db}


@pytest.fixture(scope="module")
def flower_celery(flower_env: dict[str, str]) -> Iterator[Celery]:
    app = create_app(settings_from_env(flower_env))
    yield app
    app.close()


@pytest.fixture(scope="module")
def flower(
    flower_env: dict[str, str], flower_celery: Celery, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlowerProcess]:
    """A Flower that is listening and subscribed to events (it started before any task ran)."""
    process = FlowerProcess(flower_env, tmp_path_factory.mktemp("flower") / "flower.log")
    try:
        url = process.wait_listening()
        with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as client:
            # Events are fire-and-forget: wait until Flower's receiver is subscribed (it shows a
            # probe event) so that it cannot miss the job's events.
            probe_id = f"flower-probe-{uuid.uuid4()}"

            def subscribed() -> bool:
                with flower_celery.events.default_dispatcher() as dispatcher:
                    dispatcher.send("task-sent", uuid=probe_id, name="test.flower_probe")
                return client.get(f"/api/task/info/{probe_id}").status_code == 200

            _wait_for("the probe event", subscribed, timeout=SUBSCRIBE_TIMEOUT, log=process.log)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def flower_worker(
    flower: FlowerProcess, flower_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker on database 14, started after Flower (so Flower sees all its task events)."""
    process = WorkerProcess(flower_env, tmp_path_factory.mktemp("flower-worker") / "worker.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.mark.timeout(240)
def test_flower_lists_the_job_task_and_the_worker(
    flower: FlowerProcess,
    flower_worker: WorkerProcess,
    flower_celery: Celery,
    sessions: sessionmaker[Session],
    storage: S3Storage,
    tmp_path: Path,
) -> None:
    jobs = Submitter(flower_celery, sessions, storage, tmp_path)
    job_id = jobs.create(wav_bytes(0.5))
    task_id = enqueue(flower_celery, job_id, queue="interactive", priority=5)
    job = jobs.wait(job_id, worker=flower_worker)
    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)

    with httpx.Client(base_url=flower.url, timeout=10.0, trust_env=False) as client:

        def listed_success() -> dict[str, Any] | None:
            response = client.get(
                "/api/tasks", params={"taskname": SEPARATE_TASK, "state": "SUCCESS"}
            )
            response.raise_for_status()
            tasks = response.json()
            return next((t for t in tasks.values() if str(job_id) in (t["args"] or "")), None)

        task = _wait_for(
            f"a SUCCESS task for job {job_id}", listed_success, timeout=API_TIMEOUT, log=flower.log
        )
        assert task["uuid"] == task_id
        assert task["name"] == SEPARATE_TASK
        assert task["result"] == repr("succeeded")

        info = client.get(f"/api/task/info/{task_id}")
        assert info.status_code == 200, info.text
        assert info.json()["state"] == "SUCCESS"
        assert info.json()["args"] == repr([str(job_id)])
        assert info.json()["worker"] == task["worker"]

        searched = client.get("/api/tasks", params={"search": f"args:{job_id}"})
        assert list(searched.json()) == [task_id]

        def worker_listed() -> bool:
            response = client.get("/api/workers", params={"refresh": "1"})
            return response.status_code == 200 and task["worker"] in response.json()

        _wait_for(f"worker {task['worker']}", worker_listed, timeout=API_TIMEOUT, log=flower.log)
        workers = client.get("/api/workers").json()
        assert SEPARATE_TASK in workers[task["worker"]]["registered"]
        assert {q["name"] for q in workers[task["worker"]]["active_queues"]} == {
            "interactive",
            "bulk",
        }

        # the pages operators read: the worker, and the task list with the job id column
        assert task["worker"] in client.get("/workers").text
        tasks_page = client.get("/tasks").text
        for column in ("args", "result", "routing_key"):
            assert f'<th data-column="{column}">' in tasks_page

        # unauthenticated and therefore read-only: control calls are refused
        shutdown = client.post(f"/api/worker/shutdown/{task['worker']}")
        assert shutdown.status_code == 403
        assert flower_worker.alive()
