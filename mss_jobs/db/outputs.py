"""Edge: a job's delivered stems — one row per (job, stem), written as an upsert.

A task re-run after a worker crash uploads to the same deterministic keys and records the same
stems again; the upsert replaces those rows, so outputs never duplicate.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from mss_jobs.db.models import Job, JobOutput, utcnow
from mss_jobs.domain.lifecycle import JobStatus

__all__ = ["list_outputs", "record_output"]


def record_output(
    session: Session,
    *,
    job_id: uuid.UUID,
    stem: str,
    uri: str,
    size_bytes: int,
    sha256: str,
    format: str,
    sample_rate: int,
    channels: int,
    duration_seconds: float,
    attempt: int | None = None,
) -> JobOutput | None:
    """Insert or replace the output row of (job, stem) while the job runs; None otherwise.

    One statement, `INSERT … SELECT … FROM jobs WHERE running ON CONFLICT (job_id, stem) DO
    UPDATE`, so a re-run after a crash overwrites its earlier rows and never duplicates them.
    """
    values: dict[str, Any] = {
        "stem": stem,
        "uri": uri,
        "size_bytes": size_bytes,
        "sha256": sha256,
        "format": format,
        "sample_rate": sample_rate,
        "channels": channels,
        "duration_seconds": duration_seconds,
        "recorded_at": utcnow(),
    }
    table = JobOutput.__table__
    source = select(
        Job.id, *(literal(value, table.c[name].type) for name, value in values.items())
    ).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
    if attempt is not None:
        source = source.where(Job.attempts == attempt)

    statement = _upsert_output(
        session.get_bind().dialect.name, columns=["job_id", *values], source=source
    )
    written = session.execute(statement.returning(JobOutput.job_id)).first()
    if written is None:
        return None
    return session.get(JobOutput, (job_id, stem), populate_existing=True)


def _upsert_output(dialect: str, *, columns: list[str], source: Select[Any]) -> Insert:
    replaced = [name for name in columns if name not in ("job_id", "stem")]
    key = ["job_id", "stem"]
    if dialect == "postgresql":
        pg_insert = postgresql.insert(JobOutput).from_select(columns, source)
        return pg_insert.on_conflict_do_update(
            index_elements=key, set_={name: pg_insert.excluded[name] for name in replaced}
        )
    if dialect == "sqlite":
        lite_insert = sqlite.insert(JobOutput).from_select(columns, source)
        return lite_insert.on_conflict_do_update(
            index_elements=key, set_={name: lite_insert.excluded[name] for name in replaced}
        )
    raise NotImplementedError(f"record_output has no upsert for the {dialect!r} dialect")


def list_outputs(session: Session, *, job_id: uuid.UUID) -> list[JobOutput]:
    query = select(JobOutput).where(JobOutput.job_id == job_id).order_by(JobOutput.stem)
    return list(session.scalars(query))
