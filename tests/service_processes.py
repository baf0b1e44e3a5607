"""Service subprocesses for integration tests: a real `celery worker` (and the base an API process
builds on), each in its own process group so a test can SIGKILL it with its children, configured
only through the `MSS_*` variables it is given, logging to a file the test can read."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 60.0


def isolated_env(env: Mapping[str, str], scratch: Path) -> dict[str, str]:
    """This process's environment without any `MSS_*`, `AWS_*` or proxy variable, plus `env`:
    a service subprocess sees only the test's settings, no AWS profile, no proxy on loopback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MSS_", "AWS_", "HTTP"))}
    clean.update(env)
    clean.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(scratch / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "no-aws-credentials"),
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return clean


class ServiceProcess:
    """`command` run from the repository root in its own process group, with `isolated_env(env)`,
    stdout and stderr going to `log_path`."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=isolated_env(env, log_path.parent),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and its children, as a crashed machine would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM the group (SIGKILL after 20 s); a dead parent's children are killed too."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        else:  # the group's children may outlive a dead parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


class WorkerProcess(ServiceProcess):
    """`celery -A workers.app worker` on both queues, one prefork pool process."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "workers.app",
            "worker",
            "-Q",
            "interactive,bulk",
            "-c",
            "1",
            "-P",
            "prefork",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"test-{secrets.token_hex(3)}@%h",
            "-l",
            "info",
        ]
        super().__init__(command, env, log_path)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"celery worker exited with {self.process.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        pytest.fail(f"celery worker not ready after {timeout} s:\n{self.log()}")
