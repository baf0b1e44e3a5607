"""The worker tests' stack on the shared real services (`tests/real_services.py`): a fresh
migrated database `mss_worker_test_<random>`, a unique bucket and Redis database 13 (flushed
before and after: it is reserved for these tests). Workers are real `celery -A workers.app
worker` subprocesses configured only through `MSS_*` variables, in their own process group so a
test can SIGKILL one with its pool children; `worker` (one per module) comes from the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from celery import Celery
from real_services import ServiceStack, StackSpec, stack_fixture
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import Submitter, WorkerProcess

from mss_jobs.storage import S3Storage
from workers.app import create_app

WORKER_STACK = StackSpec("mss_worker_test", redis_index=13)

service_stack = stack_fixture(WORKER_STACK)


@pytest.fixture(scope="module")
def worker_env(service_stack: ServiceStack) -> dict[str, str]:
    """`MSS_*` variables pointing at the session's services (time limits small)."""
    return service_stack.env


@pytest.fixture(scope="session")
def celery_app(service_stack: ServiceStack) -> Celery:
    """The client side (what the API holds): used to enqueue."""
    return create_app(service_stack.settings)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Mapping[str, str]], WorkerProcess]]:
    """`start_worker(env)`: a ready worker, stopped when the test ends."""
    started: list[WorkerProcess] = []

    def start(env: Mapping[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def jobs(
    celery_app: Celery,
    sessions: sessionmaker[Session],
    storage: S3Storage,
    tmp_path: Path,
) -> Submitter:
    return Submitter(celery_app, sessions, storage, tmp_path)
