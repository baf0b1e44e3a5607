"""Helpers for the worker tests: a `celery worker` subprocess, test audio, job submission."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db import Job, transaction
from mss_jobs.db.jobs import create_job
from mss_jobs.storage import S3Storage
from workers.tasks import enqueue

PREFIX = "jobs"
REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
JOB_TIMEOUT = 60.0
SAMPLE_RATE = 44100


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


class WorkerProcess:
    """A `celery worker` subprocess in its own process group, logging to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        clean = isolated_env(env, log_path.parent)
        self._log = log_path.open("wb")
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
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=clean,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"celery worker exited with {self.process.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        pytest.fail(f"celery worker not ready after {timeout} s:\n{self.log()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as a crashed machine would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
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


# -- helpers -----------------------------------------------------------------------------------


def wav_bytes(seconds: float, *, channels: int = 2, subtype: str = "FLOAT", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal((round(seconds * SAMPLE_RATE), channels)) * 0.1).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


@dataclass
class Submitter:
    """What the API will do: upload the input, create the row, commit, then enqueue."""

    app: Celery
    sessions: sessionmaker[Session]
    storage: S3Storage
    folder: Path

    def create(
        self,
        content: bytes,
        *,
        model: str = "identity",
        params: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> uuid.UUID:
        """Upload `content` and create its job; `force` bypasses the result cache (a test that
        needs the model to run on audio another test already separated)."""
        path = self.folder / f"{uuid.uuid4().hex}.wav"
        path.write_bytes(content)
        stored = self.storage.upload_file(path, f"{PREFIX}/inputs/{path.name}")
        with transaction(self.sessions) as session:
            job = create_job(
                session,
                model=model,
                params=dict(params or {}),
                input_uri=stored.uri,
                force=force,
            )
            return job.id

    def enqueue(self, job_id: uuid.UUID, *, queue: str = "interactive", priority: int = 5) -> None:
        enqueue(self.app, job_id, queue=queue, priority=priority)

    def submit(self, content: bytes, **options: Any) -> uuid.UUID:
        job_id = self.create(content, **options)
        self.enqueue(job_id)
        return job_id

    def job(self, job_id: uuid.UUID) -> Job:
        with transaction(self.sessions) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def wait(
        self,
        job_id: uuid.UUID,
        until: Callable[[Job], bool] = lambda job: job.status.is_terminal,
        *,
        worker: WorkerProcess | None = None,
        timeout: float = JOB_TIMEOUT,
    ) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            if worker is not None and not worker.alive():
                pytest.fail(f"worker died while waiting for job {job_id}:\n{worker.log()}")
            time.sleep(0.05)
        log = worker.log() if worker is not None else ""
        pytest.fail(f"job {job_id} still {self.job(job_id).status} after {timeout} s\n{log}")
