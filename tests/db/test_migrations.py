"""Alembic migrations on real PostgreSQL and SQLite: head equals the ORM, base is empty."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from mss_jobs.db import migrate
from mss_jobs.db.models import Base
from mss_jobs.db.session import make_engine

REPO = Path(__file__).resolve().parents[2]


def _schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_head_creates_exactly_the_orm_schema(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        assert _schema_differences(engine) == []
        assert _tables(engine) == {"alembic_version", *Base.metadata.tables}
        assert migrate.current_revision(empty_url) == migrate.head_revision() == "0001"
    finally:
        engine.dispose()


def test_downgrade_base_drops_everything_and_upgrade_works_again(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        assert _tables(engine) <= {"alembic_version"}
        assert migrate.current_revision(empty_url) is None
        migrate.upgrade(empty_url)
        assert _schema_differences(engine) == []
    finally:
        engine.dispose()


def test_migrated_schema_enforces_checks_and_cascades(empty_url: str) -> None:
    # compare_metadata does not look at CHECK constraints or ON DELETE: prove them here.
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    job_id = uuid.uuid4().hex
    insert_job = text(
        "INSERT INTO jobs (id, status, model, params, params_hash, input_uri, priority, progress,"
        " attempts, created_at, updated_at) VALUES (:id, :status, 'm', '{}', 'h', 'file:///x',"
        " 5, 0, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
    )
    try:
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert_job, {"id": uuid.uuid4().hex, "status": "exploded"})
        with engine.begin() as connection:
            connection.execute(insert_job, {"id": job_id, "status": "queued"})
            connection.execute(
                text(
                    "INSERT INTO job_events (job_id, at, kind, attempt)"
                    " VALUES (:id, '2025-01-01 00:00:00', 'queued', 0)"
                ),
                {"id": job_id},
            )
            connection.execute(text("DELETE FROM jobs"))
            assert connection.execute(text("SELECT count(*) FROM job_events")).scalar_one() == 0
    finally:
        engine.dispose()


def test_alembic_command_line_uses_the_ini_inside_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "MSS_DATABASE_URL": url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "migrations" / "alembic.ini")]
    for arguments in (["upgrade", "head"], ["current"]):
        done = subprocess.run(
            [*alembic, *arguments], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert "0001 (head)" in done.stdout
    assert migrate.current_revision(url) == "0001"


def test_missing_migrations_folder_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(migrate.MIGRATIONS_DIR_VARIABLE, str(tmp_path))
    with pytest.raises(ValueError, match="MSS_MIGRATIONS_DIR"):
        migrate.upgrade(f"sqlite:///{tmp_path / 'x.db'}")
