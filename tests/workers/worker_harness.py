"""Helpers for the worker tests: test audio, job submission and stand-ins for Celery's bound task
(`InProcessTask`); the `celery worker` subprocess (`WorkerProcess`) lives in
`tests/service_processes.py` and is re-exported here."""

from __future__ import annotations

import io
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
from service_processes import REPO_ROOT, WorkerProcess
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db.job_intake import create_job
from mss_jobs.db.schema import Job
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import DEFAULT_PRIORITY
from mss_jobs.storage import S3Storage
from workers.tasks import enqueue

PREFIX = "jobs"
JOB_TIMEOUT = 60.0
SAMPLE_RATE = 44100

__all__ = [
    "JOB_TIMEOUT",
    "PREFIX",
    "REPO_ROOT",
    "SAMPLE_RATE",
    "InProcessRequest",
    "InProcessTask",
    "Submitter",
    "WorkerProcess",
    "wav_bytes",
]


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
        priority: int = DEFAULT_PRIORITY,
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
                priority=priority,
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


@dataclass
class InProcessRequest:
    delivery_info: dict[str, Any]
    id: str = "in-process"
    retries: int = 0
    hostname: str = "in-process"


@dataclass
class InProcessTask:
    """Stands in for Celery's bound task when the task body runs in the test process; `app`
    stands in for the Celery app where the task body publishes."""

    request: InProcessRequest
    app: Any = None
    max_retries: int = 5

    def update_state(self, *, state: str, meta: dict[str, Any]) -> None:
        raise NotImplementedError("no result backend")  # what Celery raises without one
