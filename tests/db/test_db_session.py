"""Engines and transactions: SQLite set-up, driver choice, commit/rollback, error mapping."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db import job_intake
from mss_jobs.db.schema import Job
from mss_jobs.db.session import make_engine, make_session_factory, normalize_url, transaction
from mss_jobs.errors import TransientError


def test_sqlite_engine_creates_the_folder_and_sets_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'deep' / 'er' / 'jobs.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (tmp_path / "deep" / "er" / "jobs.db").is_file()
    finally:
        engine.dispose()


def test_migration_engines_leave_sqlite_foreign_keys_off(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}", sqlite_foreign_keys=False)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    finally:
        engine.dispose()


def test_postgresql_urls_without_a_driver_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def _count(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_transaction_commits_or_rolls_back(sessions: sessionmaker[Session]) -> None:
    arguments: dict[str, Any] = {"model": "identity", "params": {}, "input_uri": "file:///a.wav"}

    def create_then_fail() -> None:
        with transaction(sessions) as session:
            job_intake.create_job(session, **arguments)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        create_then_fail()
    assert _count(sessions) == 0
    with transaction(sessions) as session:
        job_intake.create_job(session, **arguments)
    assert _count(sessions) == 1


def test_naive_datetimes_are_refused(sessions: sessionmaker[Session]) -> None:
    naive = datetime(2030, 1, 1)  # naive on purpose
    with pytest.raises(StatementError, match="naive datetime"), transaction(sessions) as session:
        session.execute(update(Job).values(created_at=naive))


def test_an_unreachable_server_is_a_transient_error() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        sessions = make_session_factory(engine)
        with (
            pytest.raises(TransientError, match="database unavailable") as caught,
            transaction(sessions) as session,
        ):
            session.execute(text("SELECT 1"))
        assert isinstance(caught.value.__cause__, OperationalError)
    finally:
        engine.dispose()


def test_a_missing_table_is_not_transient(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    try:
        with (
            pytest.raises(OperationalError, match="no such table"),
            transaction(make_session_factory(engine)) as session,
        ):
            session.execute(select(Job))
    finally:
        engine.dispose()
