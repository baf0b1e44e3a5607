"""Databases for the job-database tests: real PostgreSQL and SQLite files, migrated with Alembic.

PostgreSQL: one fresh database `mss_test_<random>` per need, created through an AUTOCOMMIT
connection to the server's `postgres` database and dropped at the end of the test session
(`MSS_TEST_POSTGRES_ADMIN_URL` points elsewhere). An unreachable server fails the tests rather
than skipping them: CI starts it (`.ci/run`).

Data-function tests take `sessions` (parametrized over both dialects); they share one migrated
database per dialect, emptied before each test, so the schema they run on is the migrated one.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from mss_jobs.db import migrate
from mss_jobs.db.session import make_engine, make_session_factory

ADMIN_URL = os.environ.get(
    "MSS_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIALECTS = ["sqlite", "postgresql"]

T = TypeVar("T")


class PostgresServer:
    """Creates throwaway databases on the test server and drops them at the end."""

    def __init__(self, admin: Engine) -> None:
        self.admin = admin
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"mss_test_{secrets.token_hex(6)}"
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def waiting_backends(self) -> int:
        """Backends blocked on a lock in any test database (for deterministic race tests)."""
        with self.admin.connect() as connection:
            query = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname LIKE 'mss_test_%'"
            )
            return int(connection.execute(query).scalar_one())

    def drop_all(self) -> None:
        with self.admin.connect() as connection:
            for name in self.created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def _new_database_url(dialect: str, postgres: PostgresServer, folder: Path) -> str:
    if dialect == "postgresql":
        return postgres.create_database()
    return f"sqlite:///{folder / f'mss-{secrets.token_hex(4)}.db'}"


@pytest.fixture(scope="session")
def migrated_engines(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Engine]]:
    """One database per dialect, migrated to head once for the whole session."""
    folder = tmp_path_factory.mktemp("sqlite")
    engines: dict[str, Engine] = {}
    for dialect in DIALECTS:
        url = _new_database_url(dialect, postgres, folder)
        migrate.upgrade(url)
        engines[dialect] = make_engine(url)
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_url(dialect: str, postgres: PostgresServer, tmp_path: Path) -> str:
    """A new, empty database of `dialect` (never migrated)."""
    return _new_database_url(dialect, postgres, tmp_path)


def _emptied(engine: Engine) -> Engine:
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM batches")  # their jobs go by ON DELETE CASCADE
        connection.exec_driver_sql("DELETE FROM jobs")  # children go by ON DELETE CASCADE
    return engine


@pytest.fixture
def engine(dialect: str, migrated_engines: dict[str, Engine]) -> Engine:
    """The migrated database of `dialect`, emptied."""
    return _emptied(migrated_engines[dialect])


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def pg_sessions(migrated_engines: dict[str, Engine]) -> sessionmaker[Session]:
    """Sessions on the migrated PostgreSQL database alone (lock-interleaving tests)."""
    return make_session_factory(_emptied(migrated_engines["postgresql"]))


@pytest.fixture
def concurrently() -> Callable[[list[Callable[[], Any]]], list[Any]]:
    """`concurrently(functions)`: see `run_concurrently`."""
    return run_concurrently


def run_concurrently(functions: list[Callable[[], T]], *, timeout: float = 30.0) -> list[T]:
    """Run each function in its own thread, released together by a barrier; re-raise failures."""
    barrier = threading.Barrier(len(functions))
    results: list[Any] = [None] * len(functions)
    errors: list[BaseException] = []

    def run(index: int, function: Callable[[], T]) -> None:
        try:
            barrier.wait(timeout)
            results[index] = function()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(index, function), daemon=True)
        for index, function in enumerate(functions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a concurrent call hung"
    if errors:
        raise errors[0]
    return results
