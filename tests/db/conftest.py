"""Databases for the job-database tests: real PostgreSQL and SQLite files, migrated with Alembic.

PostgreSQL comes from the shared `postgres` fixture (`tests/real_services.py`): fresh databases
`mss_db_test_<random>`, dropped at the end of the session. The `dialect` parameter
`postgresql` is marked `services`; its `sqlite` twin needs no server and runs under
`-m "not services"` too.

Data-function tests take `sessions` (parametrized over both dialects); they share one migrated
database per dialect, emptied before each test, so the schema they run on is the migrated one.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from real_services import PostgresServer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db import migrate
from mss_jobs.db.session import make_engine, make_session_factory

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
DATABASE_PREFIX = "mss_db_test"

T = TypeVar("T")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A SQLite database migrated to head once for the whole session."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'mss.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_postgresql(postgres: PostgresServer) -> Iterator[Engine]:
    """A PostgreSQL database migrated to head once for the whole session."""
    engine = make_engine(postgres.create_database(DATABASE_PREFIX, migrated=True))
    yield engine
    engine.dispose()


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_empty_url(
    dialect: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], str]:
    """`new_empty_url()`: a new, empty database of `dialect` (never migrated) on each call."""

    def new() -> str:
        if dialect == "postgresql":  # a `services` parameter: only then is the server reached
            postgres: PostgresServer = request.getfixturevalue("postgres")
            return postgres.create_database(DATABASE_PREFIX)
        return f"sqlite:///{tmp_path / f'mss-{secrets.token_hex(4)}.db'}"

    return new


@pytest.fixture
def empty_url(new_empty_url: Callable[[], str]) -> str:
    """A new, empty database of `dialect` (never migrated)."""
    return new_empty_url()


def _emptied(engine: Engine) -> Engine:
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM batches")  # their jobs go by ON DELETE CASCADE
        connection.exec_driver_sql("DELETE FROM jobs")  # children go by ON DELETE CASCADE
    return engine


@pytest.fixture
def engine(dialect: str, request: pytest.FixtureRequest) -> Engine:
    """The migrated database of `dialect`, emptied (`migrated_sqlite` or `migrated_postgresql`:
    only the `services` parameter reaches the server)."""
    migrated: Engine = request.getfixturevalue(f"migrated_{dialect}")
    return _emptied(migrated)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def pg_sessions(migrated_postgresql: Engine) -> sessionmaker[Session]:
    """Sessions on the migrated PostgreSQL database alone (lock-interleaving tests)."""
    return make_session_factory(_emptied(migrated_postgresql))


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
