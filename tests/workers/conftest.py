"""Real services for the worker tests: PostgreSQL, a moto S3 server, Redis and `celery worker`.

Each session gets a fresh migrated database `mss_test_<random>`, a unique bucket on a moto server
on loopback, and Redis database 13 (flushed before and after: it is reserved for these tests).
The worker is a real `celery -A workers.app worker` subprocess configured only through `MSS_*`
variables, in its own process group so a test can SIGKILL it with its pool children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from real_services import (
    flushed_redis,
    fresh_database,
    moto_endpoint,
    new_bucket,
    s3_storage,
    service_env,
)
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import PREFIX, Submitter, WorkerProcess

from mss_jobs.db import make_engine, make_session_factory
from mss_jobs.settings import Settings, load_settings
from mss_jobs.storage import S3Storage
from workers.app import create_app

REDIS_URL = "redis://127.0.0.1:6379/13"
ACCESS_KEY_ID = "MSSTESTACCESSKEY0001"
SECRET_ACCESS_KEY = "mss-test-secret-do-not-print-0123456789"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated to head, dropped at the end of the session."""
    with fresh_database("mss_test") as url:
        yield url


@pytest.fixture(scope="session")
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def bucket(s3_endpoint: str) -> str:
    return new_bucket(
        s3_endpoint, name_prefix="mss-test", access_key_id=ACCESS_KEY_ID, secret=SECRET_ACCESS_KEY
    )


@pytest.fixture(scope="session")
def storage(s3_endpoint: str, bucket: str) -> S3Storage:
    return s3_storage(
        s3_endpoint,
        bucket,
        prefix=PREFIX,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture(scope="session")
def redis_db() -> Iterator[str]:
    """This suite's Redis database, empty before and after the session."""
    with flushed_redis(REDIS_URL) as url:
        yield url


@pytest.fixture(scope="session")
def worker_env(
    database_url: str, s3_endpoint: str, bucket: str, redis_db: str, tmp_path_factory: Any
) -> dict[str, str]:
    """`MSS_*` variables pointing at the session's services (time limits small)."""
    return service_env(
        database_url=database_url,
        broker_url=redis_db,
        s3_endpoint=s3_endpoint,
        bucket=bucket,
        prefix=PREFIX,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        data_dir=str(tmp_path_factory.mktemp("mss-data")),
    )


@pytest.fixture(scope="session")
def settings(worker_env: dict[str, str]) -> Settings:
    fields = {name.removeprefix("MSS_").lower(): value for name, value in worker_env.items()}
    return load_settings(**fields)


@pytest.fixture(scope="session")
def celery_app(settings: Settings) -> Celery:
    """The client side (what the API holds): used to enqueue."""
    return create_app(settings)


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


@pytest.fixture(scope="module")
def worker(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker shared by a module's tests (module scope: it must not outlive them, or it
    would compete for the tasks of a test that runs its own workers)."""
    process = WorkerProcess(worker_env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def jobs(
    celery_app: Celery,
    sessions: sessionmaker[Session],
    storage: S3Storage,
    tmp_path: Path,
) -> Submitter:
    return Submitter(celery_app, sessions, storage, tmp_path)
