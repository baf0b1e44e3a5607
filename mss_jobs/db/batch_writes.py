"""Edge: what every batch write shares — its errors, the batch row lock, bulk job events.

Intake (`batch_intake.py`), dispatch (`batch_dispatch.py`) and the transitions (`batches.py`)
change a batch under the same rules: lock the batch row first (`lock_batch`,
`find_and_lock_batch`), stamp `updated_at` with every change of it (`update_batch`), and log job
changes in one statement (`log_bulk`); keeping those rules in one place keeps them equal.
Callers import the errors from `mss_jobs.db.batches`, which re-exports them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from mss_jobs.db.bulk import insert_rows
from mss_jobs.db.models import Batch, JobEvent, utcnow
from mss_jobs.domain.lifecycle import EventKind
from mss_jobs.errors import ConfigError, PermanentError

__all__ = [
    "CHUNK_SIZE",
    "BatchKeyConflictError",
    "BatchNotFoundError",
    "BatchStateError",
    "find_and_lock_batch",
    "lock_batch",
    "log_bulk",
    "table_of",
    "update_batch",
]

CHUNK_SIZE = 1000
"""Rows per bulk statement: large enough to amortize a round trip, small enough to bound memory
and to stay under SQLite's limit on bound parameters."""


class BatchKeyConflictError(ConfigError):
    """A batch key was reused for a different batch (model, params, source or force differ)."""

    code = "batch.key_conflict"


class BatchNotFoundError(PermanentError):
    code = "batch.not_found"


class BatchStateError(PermanentError):
    """The batch is in a state the requested operation does not apply to (e.g. cancelled)."""

    code = "batch.state_conflict"


def lock_batch(session: Session, batch_id: uuid.UUID) -> Batch:
    """`find_and_lock_batch`, raising `BatchNotFoundError` for an unknown batch."""
    batch = find_and_lock_batch(session, batch_id)
    if batch is None:
        raise BatchNotFoundError(f"no batch {batch_id}")
    return batch


def find_and_lock_batch(session: Session, batch_id: uuid.UUID) -> Batch | None:
    """The batch row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    return session.scalars(
        select(Batch)
        .where(Batch.id == batch_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def update_batch(session: Session, batch_id: uuid.UUID, **values: Any) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id).values(updated_at=utcnow(), **values))


def log_bulk(
    session: Session,
    changed: Sequence[tuple[uuid.UUID, int, str | None]],
    kind: EventKind,
    *,
    at: datetime,
) -> None:
    """One `job_events` row of `kind` per (job id, attempt, worker), in one statement."""
    insert_rows(
        session,
        table_of(JobEvent),
        [
            {"job_id": job_id, "at": at, "kind": kind, "attempt": attempt, "worker": worker}
            for job_id, attempt, worker in changed
        ],
    )


def table_of(entity: type[Any]) -> Table:
    """The Core `Table` of a mapped class, for statements that bypass the ORM."""
    table = entity.__table__
    assert isinstance(table, Table)
    return table
