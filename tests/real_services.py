"""Real services for the integration tests, as pytest fixtures: a plugin that `tests/conftest.py`
loads (`pytest_plugins`), so its fixtures and hooks apply to every suite.

Three base fixtures reach a real server, and every test that needs one gets it through them:

    postgres        PostgreSQL at MSS_TEST_POSTGRES_ADMIN_URL: throwaway databases
    redis_server    Redis at MSS_TEST_REDIS_URL: numbered databases, flushed before and after
    moto_endpoint   one moto S3 server on loopback for the whole session

The hooks below mark `services` every test whose fixtures include one of them (`SERVICE_FIXTURES`,
directly or through other fixtures), and fail a test that starts one without the mark, so
`-m "not services"` runs the rest with no server at all. A fixture that reaches a server only for
some parameters marks those (`pytest.param("s3", marks=pytest.mark.services)`). An unreachable
server fails the tests that need it rather than skipping them: CI starts both (`.ci/run`).

A suite that runs the job system (the API, the workers) defines `service_stack` from its own
`StackSpec` (`service_stack = stack_fixture(spec)` in its conftest): a fresh migrated database
`<name>_<random>`, a unique bucket, and its own Redis database, so that suites cannot see each
other's jobs or queued messages. The accessors below (`database_url`, `sessions`, `s3_endpoint`,
`bucket`, `storage`, `redis_db`, `settings`, and `worker`, a real `celery worker` per module)
hand out the pieces of whichever stack the requesting suite defines; they are module-scoped so
that each module resolves its own suite's `service_stack` (a session-scoped accessor would keep
the first suite's stack for the whole session).

Redis databases in use: 11 batch end-to-end (tests/api/test_batches_e2e.py), 12 API tests,
13 worker tests, 14 Flower (tests/workers/test_flower.py) and the slim-install test (its own queue
names, never flushed). Database 0 is left alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from moto.server import ThreadedMotoServer
from service_processes import WorkerProcess
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from mss_jobs.db import migrate
from mss_jobs.db.session import make_engine, make_session_factory
from mss_jobs.settings import Settings, load_settings
from mss_jobs.storage import S3Storage

ADMIN_URL = os.environ.get(
    "MSS_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("MSS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REGION = "us-east-1"
ACCESS_KEY_ID = "MSSTESTACCESSKEY0001"
SECRET_ACCESS_KEY = "mss-test-secret-do-not-print-0123456789"
PREFIX = "jobs"

SERVICE_FIXTURES = frozenset({"postgres", "redis_server", "moto_endpoint"})
"""The fixtures that reach a real server; a test using any of them is marked `services`."""


# -- the `services` marker ------------------------------------------------------------------------

_started: list[str] = []
"""Real-service fixtures set up during the test phase now running."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `services` every test whose fixture closure holds a real-service fixture."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object]) -> None:
    if fixturedef.argname in SERVICE_FIXTURES:
        _started.append(fixturedef.argname)


def _run_phase_checking_marks(item: pytest.Item) -> Generator[None, object, object]:
    _started.clear()
    result = yield
    _check_marked(item)
    return result


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_run_phase_checking_marks)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_run_phase_checking_marks)


def _check_marked(item: pytest.Item) -> None:
    """Fail a test phase that started a real-service fixture without the mark (a test that
    reaches one through `request.getfixturevalue` must mark itself, or its parameter)."""
    if _started and item.get_closest_marker("services") is None:
        pytest.fail(
            f"{item.nodeid} started the real-service fixture {_started[0]!r} but is not marked "
            "`services`: request the fixture as an argument, or mark the test (or the parameter "
            "that reaches it) with pytest.mark.services",
            pytrace=False,
        )


# -- PostgreSQL ---------------------------------------------------------------------------------


class PostgresServer:
    """Creates throwaway databases on the test server; drops them when asked or at the end."""

    def __init__(self, admin: Engine) -> None:
        self.admin = admin
        self.created: list[str] = []

    def create_database(self, prefix: str = "mss_test", *, migrated: bool = False) -> str:
        """A new database `<prefix>_<random>` (empty, or migrated to head); returns its URL."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        if migrated:
            migrate.upgrade(url)
        return url

    @contextmanager
    def database(self, prefix: str, *, migrated: bool = True) -> Iterator[str]:
        """`create_database`, dropped on exit."""
        url = self.create_database(prefix, migrated=migrated)
        try:
            yield url
        finally:
            self.drop(make_url(url).database or "")

    def waiting_backends(self) -> int:
        """Backends blocked on a lock in a database made here (for deterministic race tests)."""
        with self.admin.connect() as connection:
            query = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = ANY(:names)"
            )
            return int(connection.execute(query, {"names": self.created}).scalar_one())

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(name)


@contextmanager
def fresh_database(name_prefix: str) -> Iterator[str]:
    """A new database `<name_prefix>_<random>`, migrated to head, dropped after: for code
    outside pytest (`benchmarks/bench_batch_intake.py`)."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with PostgresServer(admin).database(name_prefix, migrated=True) as url:
            yield url
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({exc.orig}); start it "
            "(pg_ctlcluster <version> main start) or set MSS_TEST_POSTGRES_ADMIN_URL"
        )
    server = PostgresServer(admin)
    yield server
    server.drop_all()
    admin.dispose()


# -- Redis --------------------------------------------------------------------------------------


class RedisServer:
    """The test Redis server; each suite owns one of its numbered databases."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def url(self, index: int) -> str:
        return f"{self.base_url}/{index}"

    @contextmanager
    def flushed(self, index: int) -> Iterator[str]:
        """Database `index`, emptied before and after; yields its URL."""
        url = self.url(index)
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it "
            "(redis-server --daemonize yes) or set MSS_TEST_REDIS_URL"
        )
    finally:
        client.close()
    return RedisServer(REDIS_URL)


# -- S3 (moto) ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:<free port>` of a moto S3 server running for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_storage(
    endpoint: str,
    bucket: str,
    *,
    prefix: str,
    access_key_id: str = ACCESS_KEY_ID,
    secret_access_key: str = SECRET_ACCESS_KEY,
    max_attempts: int = 2,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
) -> S3Storage:
    """A client for `bucket` with few retries and short timeouts (tests fail fast)."""
    return S3Storage(
        bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=REGION,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def new_bucket(
    endpoint: str,
    *,
    name_prefix: str,
    access_key_id: str = ACCESS_KEY_ID,
    secret: str = SECRET_ACCESS_KEY,
) -> str:
    """Create a uniquely named bucket and return its name."""
    name = f"{name_prefix}-{uuid.uuid4().hex[:16]}"
    s3_storage(
        endpoint, name, prefix="x", access_key_id=access_key_id, secret_access_key=secret
    ).ensure_bucket()
    return name


# -- the job system's services, one stack per suite ----------------------------------------------


def service_env(
    *,
    database_url: str,
    broker_url: str,
    s3_endpoint: str,
    bucket: str,
    prefix: str,
    access_key_id: str,
    secret_access_key: str,
    data_dir: str,
) -> dict[str, str]:
    """`MSS_*` variables pointing a worker or an API at these services, with small time limits
    (soft 20 s < hard 25 s < visibility 30 s) so a stuck test ends quickly."""
    return {
        "MSS_BROKER_URL": broker_url,
        "MSS_DATABASE_URL": database_url,
        "MSS_DATA_DIR": data_dir,
        "MSS_STORAGE_BACKEND": "s3",
        "MSS_S3_ENDPOINT_URL": s3_endpoint,
        "MSS_S3_REGION": REGION,
        "MSS_S3_BUCKET": bucket,
        "MSS_S3_PREFIX": prefix,
        "MSS_S3_ACCESS_KEY_ID": access_key_id,
        "MSS_S3_SECRET_ACCESS_KEY": secret_access_key,
        "MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "20",
        "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "25",
        "MSS_VISIBILITY_TIMEOUT_SECONDS": "30",
        # A test must never reach the internet for model weights.
        "MSS_MODEL_PULL_ON_DEMAND": "false",
    }


def settings_from_env(env: Mapping[str, str], **overrides: Any) -> Settings:
    """The `Settings` a process started with the `MSS_*` variables `env` would load."""
    fields: dict[str, Any] = {name.removeprefix("MSS_").lower(): v for name, v in env.items()}
    fields.update(overrides)
    return load_settings(**fields)


@dataclass(frozen=True)
class StackSpec:
    """A suite's own namespace on the shared servers."""

    name: str
    """Database name prefix (`<name>_<random>`); its bucket is `<name with dashes>-<random>`."""
    redis_index: int
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """`MSS_*` variables on top of `service_env`'s."""


@dataclass(frozen=True)
class ServiceStack:
    """One suite's database, bucket, Redis database and the `MSS_*` variables naming them."""

    database_url: str
    sessions: sessionmaker[Session]
    s3_endpoint: str
    bucket: str
    storage: S3Storage
    redis_url: str
    env: dict[str, str]
    settings: Settings


@dataclass(frozen=True)
class Servers:
    """The session's three servers, from which each suite builds its `service_stack`."""

    postgres: PostgresServer
    redis: RedisServer
    moto_endpoint: str
    tmp_path_factory: pytest.TempPathFactory

    @contextmanager
    def stack(self, spec: StackSpec) -> Iterator[ServiceStack]:
        """Build `spec`'s stack; on exit its database is dropped and its Redis database flushed."""
        with (
            self.postgres.database(spec.name, migrated=True) as database_url,
            self.redis.flushed(spec.redis_index) as redis_url,
        ):
            bucket = new_bucket(self.moto_endpoint, name_prefix=spec.name.replace("_", "-"))
            env = service_env(
                database_url=database_url,
                broker_url=redis_url,
                s3_endpoint=self.moto_endpoint,
                bucket=bucket,
                prefix=PREFIX,
                access_key_id=ACCESS_KEY_ID,
                secret_access_key=SECRET_ACCESS_KEY,
                data_dir=str(self.tmp_path_factory.mktemp(f"{spec.name}-data")),
            )
            env.update(spec.extra_env)
            engine = make_engine(database_url)
            try:
                yield ServiceStack(
                    database_url=database_url,
                    sessions=make_session_factory(engine),
                    s3_endpoint=self.moto_endpoint,
                    bucket=bucket,
                    storage=s3_storage(self.moto_endpoint, bucket, prefix=PREFIX),
                    redis_url=redis_url,
                    env=env,
                    settings=settings_from_env(env),
                )
            finally:
                engine.dispose()


@pytest.fixture(scope="session")
def servers(
    postgres: PostgresServer,
    redis_server: RedisServer,
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Servers:
    return Servers(postgres, redis_server, moto_endpoint, tmp_path_factory)


def stack_fixture(spec: StackSpec) -> Any:
    """A suite's session-scoped `service_stack` fixture on `spec`; in its conftest:
    `service_stack = stack_fixture(StackSpec(...))`."""

    @pytest.fixture(scope="session", name="service_stack")
    def service_stack(servers: Servers) -> Iterator[ServiceStack]:
        with servers.stack(spec) as stack:
            yield stack

    return service_stack


def _stack_accessor(attribute: str) -> Any:
    """A module-scoped fixture named `attribute` that hands out that piece of the suite's
    `service_stack`."""

    @pytest.fixture(scope="module", name=attribute)
    def accessor(service_stack: ServiceStack) -> Any:
        return getattr(service_stack, attribute)

    return accessor


database_url = _stack_accessor("database_url")
sessions = _stack_accessor("sessions")
s3_endpoint = _stack_accessor("s3_endpoint")
bucket = _stack_accessor("bucket")
storage = _stack_accessor("storage")
settings = _stack_accessor("settings")


@pytest.fixture(scope="module")
def redis_db(service_stack: ServiceStack) -> str:
    """The suite's Redis database (empty at the start and the end of the session)."""
    return service_stack.redis_url


@pytest.fixture(scope="module")
def worker(
    service_stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real `celery worker` on the suite's stack, shared by one module's tests (module scope:
    it must not outlive them, or it would take the tasks of a later module that runs its own
    workers or needs jobs to stay queued)."""
    process = WorkerProcess(service_stack.env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
