"""Real services for the API tests: PostgreSQL, moto S3, Redis and the API over HTTP (uvicorn).

Like `tests/workers/conftest.py` (whose `WorkerProcess` and `wav_bytes` are reused): a fresh
migrated database per session, a unique bucket on a loopback moto server, and Redis database 12
(flushed before and after; 13 belongs to the worker tests). The API runs in uvicorn on a free
loopback port in a thread, and so does a second app whose broker URL points at a closed port.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
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
SERVER_START_TIMEOUT = 15.0


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
    """`app` served by uvicorn on a free loopback port in a thread, and a client for it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30.0, trust_env=False
        ) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(SERVER_START_TIMEOUT)


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
