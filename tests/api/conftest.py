"""Real services for the API tests: PostgreSQL, moto S3, Redis and the API over HTTP (uvicorn).

Like `tests/workers/conftest.py` (whose `WorkerProcess` and `wav_bytes` are reused): a fresh
migrated database per session, a unique bucket on a loopback moto server, and Redis database 12
(flushed before and after; 13 belongs to the worker tests). The API runs in uvicorn on a free
loopback port in a thread, and so does a second app whose broker URL points at a closed port.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from real_services import (
    flushed_redis,
    fresh_database,
    moto_endpoint,
    new_bucket,
    s3_storage,
    service_env,
)
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.api.main import create_app
from mss_jobs.api.server import serve_in_thread
from mss_jobs.db import make_engine, make_session_factory
from mss_jobs.settings import Settings, load_settings
from mss_jobs.storage import S3Storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from worker_harness import WorkerProcess

REDIS_URL = "redis://127.0.0.1:6379/12"
ACCESS_KEY_ID = "MSSAPITESTACCESSKEY1"
SECRET_ACCESS_KEY = "mss-api-test-secret-do-not-print-0123456"
PREFIX = "jobs"
MAX_UPLOAD_BYTES = 2_000_000


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated to head, dropped at the end of the session."""
    with fresh_database("mss_api_test") as url:
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
        s3_endpoint,
        name_prefix="mss-api-test",
        access_key_id=ACCESS_KEY_ID,
        secret=SECRET_ACCESS_KEY,
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
def api_env(
    database_url: str, s3_endpoint: str, bucket: str, redis_db: str, tmp_path_factory: Any
) -> dict[str, str]:
    """`MSS_*` variables shared by the API and the worker subprocess."""
    env = service_env(
        database_url=database_url,
        broker_url=redis_db,
        s3_endpoint=s3_endpoint,
        bucket=bucket,
        prefix=PREFIX,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        data_dir=str(tmp_path_factory.mktemp("mss-data")),
    )
    env["MSS_MAX_UPLOAD_BYTES"] = str(MAX_UPLOAD_BYTES)
    return env


def _settings(env: dict[str, str], **overrides: Any) -> Settings:
    fields: dict[str, Any] = {name.removeprefix("MSS_").lower(): v for name, v in env.items()}
    fields.update(overrides)
    return load_settings(**fields)


@pytest.fixture(scope="session")
def settings(api_env: dict[str, str]) -> Settings:
    return _settings(api_env)


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@contextmanager
def serve(app: FastAPI) -> Iterator[httpx.Client]:
    """`app` served by uvicorn on a free loopback port in a thread (the CLI's own
    `serve_in_thread`), and a client for it."""
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=30.0, trust_env=False) as http,
    ):
        yield http


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[httpx.Client]:
    with serve(app) as http:
        yield http


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="session")
def broker_down_client(api_env: dict[str, str], closed_port: int) -> Iterator[httpx.Client]:
    """The same API, but its broker URL points at a closed port."""
    settings = _settings(api_env, broker_url=f"redis://127.0.0.1:{closed_port}/0")
    with serve(create_app(settings)) as http:
        yield http


@pytest.fixture(scope="module")
def worker(api_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real `celery worker` for one module (module scope: others must see jobs stay queued)."""
    process = WorkerProcess(api_env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        process.wait_ready()
        yield
    finally:
        process.stop()
