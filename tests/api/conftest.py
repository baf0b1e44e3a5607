"""The API tests' stack on the shared real services (`tests/real_services.py`): a fresh migrated
database `mss_api_test_<random>`, a unique bucket and Redis database 12 (flushed before and after;
13 belongs to the worker tests). The API runs in uvicorn on a free loopback port in a thread, and
so does a second app whose broker URL points at a closed port. `worker_harness` (the worker
tests' job helpers and test audio) is importable here too.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from real_services import ServiceStack, StackSpec, settings_from_env, stack_fixture

from mss_jobs.api.main import create_app
from mss_jobs.api.server import serve_in_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))

MAX_UPLOAD_BYTES = 2_000_000
API_STACK = StackSpec(
    "mss_api_test", redis_index=12, extra_env={"MSS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
)

service_stack = stack_fixture(API_STACK)


@pytest.fixture(scope="module")
def api_env(service_stack: ServiceStack) -> dict[str, str]:
    """`MSS_*` variables shared by the API and the worker subprocess."""
    return service_stack.env


@pytest.fixture(scope="session")
def app(service_stack: ServiceStack) -> FastAPI:
    return create_app(service_stack.settings)


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
def broker_down_client(service_stack: ServiceStack, closed_port: int) -> Iterator[httpx.Client]:
    """The same API, but its broker URL points at a closed port."""
    settings = settings_from_env(service_stack.env, broker_url=f"redis://127.0.0.1:{closed_port}/0")
    with serve(create_app(settings)) as http:
        yield http
