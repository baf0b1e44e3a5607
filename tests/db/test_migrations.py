"""Alembic migrations on real PostgreSQL and SQLite: head equals the ORM, base is empty."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from mss_jobs.db import migrate
from mss_jobs.db.schema import Base
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
        assert migrate.current_revision(empty_url) == migrate.head_revision() == "0003"
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


def _schema(engine: Engine) -> dict[str, object]:
    """Everything the inspector sees of each table, comparable across databases."""
    inspector = inspect(engine)
    schema: dict[str, object] = {}
    for table in sorted(_tables(engine) - {"alembic_version"}):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "indexes": sorted(
                (i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "checks": sorted(
                (c["name"] or "", c["sqltext"]) for c in inspector.get_check_constraints(table)
            ),
            "foreign_keys": sorted(
                (f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return schema


INSERT_JOB = (
    "INSERT INTO jobs (id, status, model, params, params_hash, input_uri, priority, progress,"
    " attempts, created_at, updated_at, batch_id{extra_columns}) VALUES (:id, :status, 'm', '{{}}',"
    " 'h', 's3://b/k', 5, 0, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00', :batch_id"
    "{extra_values})"
)
INSERT_BATCH = text(
    "INSERT INTO batches (id, status, model, params, params_hash, source, lane, priority,"
    " max_in_flight, force, accepted_rows, rejected_rows, created_at, updated_at)"
    " VALUES (:id, 'active', 'm', '{}', 'h', '{}', 'bulk', 5, 10, false, 0, 0,"
    " '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
)


def _insert_job(connection: Connection, job_id: str, **values: object) -> None:
    extra = {name: value for name, value in values.items() if name not in ("status", "batch_id")}
    statement = INSERT_JOB.format(
        extra_columns="".join(f", {name}" for name in extra),
        extra_values="".join(f", :{name}" for name in extra),
    )
    connection.execute(
        text(statement),
        {"id": job_id, "status": "queued", "batch_id": None, **values},
    )


@contextmanager
def _engines_at(url: str, reference_url: str, revision: str) -> Iterator[tuple[Engine, Engine]]:
    """Engines on `url` and on a reference database, both upgraded to `revision`."""
    migrate.upgrade(reference_url, revision)
    reference = make_engine(reference_url)
    migrate.upgrade(url, revision)
    engine = make_engine(url)
    try:
        yield engine, reference
    finally:
        engine.dispose()
        reference.dispose()


def _assert_downgrades_to_reference(
    url: str, revision: str, engine: Engine, reference: Engine
) -> None:
    migrate.downgrade(url, revision)
    assert migrate.current_revision(url) == revision
    assert _schema(engine) == _schema(reference)


def test_0002_upgrades_existing_jobs_and_downgrades_to_exactly_0001(
    empty_url: str, new_empty_url: Callable[[], str]
) -> None:
    old_job, batch_id, pending, queued = (uuid.uuid4().hex for _ in range(4))
    with _engines_at(empty_url, new_empty_url(), "0001") as (engine, reference):
        with engine.begin() as connection:  # 0001 had batch_id without a batches table
            _insert_job(connection, old_job, batch_id=uuid.uuid4().hex)
        migrate.upgrade(empty_url, "0002")
        # The ORM is at head: 0002 lacks exactly what 0003 adds.
        assert [(d[0], d[2], d[3].name) for d in _schema_differences(engine)] == [
            ("add_column", "jobs", "force")
        ]
        with engine.begin() as connection:
            row = connection.execute(
                text("SELECT status, batch_id, batch_line FROM jobs WHERE id = :id"),
                {"id": old_job},
            ).one()
            assert tuple(row) == ("queued", None, None)  # kept; its dangling batch id cleared
            connection.execute(INSERT_BATCH, {"id": batch_id})
            for job_id, status, line in ((pending, "pending", 1), (queued, "queued", 2)):
                _insert_job(connection, job_id, status=status, batch_id=batch_id, batch_line=line)

        _assert_downgrades_to_reference(empty_url, "0001", engine, reference)
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT id, status FROM jobs")).all()
        kept = {uuid.UUID(str(row[0])).hex: row[1] for row in rows}
        assert kept == {
            old_job: "queued",
            pending: "cancelled",  # 0001 knows no pending, and nothing would ever run it
            queued: "queued",
        }
        migrate.upgrade(empty_url)
        assert _schema_differences(engine) == []


def test_0003_gives_existing_jobs_force_false_and_downgrades_to_exactly_0002(
    empty_url: str, new_empty_url: Callable[[], str]
) -> None:
    old_job, new_job, forced = (uuid.uuid4().hex for _ in range(3))
    with _engines_at(empty_url, new_empty_url(), "0002") as (engine, reference):
        with engine.begin() as connection:
            _insert_job(connection, old_job, reused_from=None)
        migrate.upgrade(empty_url, "0003")
        assert _schema_differences(engine) == []
        with engine.begin() as connection:
            _insert_job(connection, new_job)  # a writer that does not name the column
            _insert_job(connection, forced, force=True)
            rows = connection.execute(text("SELECT id, force FROM jobs")).all()
        assert {uuid.UUID(str(i)).hex: bool(f) for i, f in rows} == {
            old_job: False,
            new_job: False,
            forced: True,
        }
        with pytest.raises(IntegrityError), engine.begin() as connection:
            _insert_job(connection, uuid.uuid4().hex, force=None)

        _assert_downgrades_to_reference(empty_url, "0002", engine, reference)
        with engine.begin() as connection:
            kept = connection.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        assert kept == 3
        migrate.upgrade(empty_url)
        assert _schema_differences(engine) == []


def test_migrated_schema_enforces_the_batch_constraints(empty_url: str) -> None:
    # compare_metadata does not look at CHECK constraints or ON DELETE: prove them here.
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    batch_id, source, reuser = (uuid.uuid4().hex for _ in range(3))
    try:
        with engine.begin() as connection:
            connection.execute(INSERT_BATCH, {"id": batch_id})
        for bad in (
            {"batch_id": batch_id},  # a batch job needs its line
            {"batch_line": 3},  # a line needs its batch
            {"batch_id": batch_id, "batch_line": 0},
            {"batch_id": uuid.uuid4().hex, "batch_line": 1},  # no such batch
        ):
            with pytest.raises(IntegrityError), engine.begin() as connection:
                _insert_job(connection, uuid.uuid4().hex, **bad)
        with engine.begin() as connection:
            _insert_job(connection, source, status="pending", batch_id=batch_id, batch_line=1)
            _insert_job(connection, reuser, reused_from=source)
            connection.execute(
                text(
                    "INSERT INTO batch_rejections (batch_id, line, input_text, code, message)"
                    " VALUES (:id, 2, 'x', 'c', 'm')"
                ),
                {"id": batch_id},
            )
        with pytest.raises(IntegrityError), engine.begin() as connection:
            _insert_job(connection, uuid.uuid4().hex, batch_id=batch_id, batch_line=1)
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(
                text("UPDATE batches SET lane = 'express' WHERE id = :id"), {"id": batch_id}
            )
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM batches"))
            assert connection.execute(text("SELECT count(*) FROM batch_rejections")).scalar() == 0
            remaining = connection.execute(text("SELECT id, reused_from FROM jobs")).all()
        assert [(uuid.UUID(str(i)).hex, r) for i, r in remaining] == [(reuser, None)]
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
    assert "0003 (head)" in done.stdout
    assert migrate.current_revision(url) == "0003"


def test_missing_migrations_folder_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(migrate.MIGRATIONS_DIR_VARIABLE, str(tmp_path))
    with pytest.raises(ValueError, match="MSS_MIGRATIONS_DIR"):
        migrate.upgrade(f"sqlite:///{tmp_path / 'x.db'}")


def test_ensure_current_refuses_a_database_behind_the_code_unless_asked_to_upgrade(
    tmp_path: Path,
) -> None:
    from mss_jobs.errors import ConfigError

    url = f"sqlite:///{tmp_path / 'behind.db'}"
    with pytest.raises(ConfigError, match=r"at migration none \(empty\).*run `mss-jobs migrate`"):
        migrate.ensure_current(url, upgrade_if_behind=False)
    assert migrate.current_revision(url) is None  # refused, nothing created

    migrate.ensure_current(url, upgrade_if_behind=True)
    assert migrate.current_revision(url) == migrate.head_revision()
    migrate.ensure_current(url, upgrade_if_behind=False)  # current: no error
