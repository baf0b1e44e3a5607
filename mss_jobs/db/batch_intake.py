"""Edge: a batch's intake — create it, add its rows as pending jobs or rejections, close it — and
the rules every change of a batch shares: the batch row lock (its errors are `mss_jobs.errors`).

Rows arrive as a stream (a manifest, an S3 listing) and become `pending` jobs in bulk, chunk by
chunk, with `INSERT … ON CONFLICT (batch_id, batch_line) DO NOTHING`
(`job_intake.insert_batch_jobs`): reading the same manifest again (a resubmission, a resumed
intake after a crash) inserts nothing twice, and the counters on the batch row count only what
was inserted. Each function locks the batch row first, so callers should commit chunk by chunk:
an open intake transaction holds it.

Every change of a batch (here and in `batch_dispatch.py`) follows the same rules: lock the batch
row first (`lock_batch`, `find_and_lock_batch`), stamp `updated_at` with every change of it
(`update_batch`), and write many rows per statement (`session.insert_rows`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, Protocol, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mss_jobs.db.batch_queries import get_batch
from mss_jobs.db.job_intake import BatchRow, check_priority, insert_batch_jobs, params_hash
from mss_jobs.db.schema import (
    DEFAULT_MAX_IN_FLIGHT,
    MAX_MAX_IN_FLIGHT,
    Batch,
    BatchRejection,
    table_of,
    utcnow,
)
from mss_jobs.db.session import insert_rows, insert_unless_taken
from mss_jobs.domain.lifecycle import DEFAULT_PRIORITY, LANES, BatchStatus, Lane
from mss_jobs.errors import BatchKeyConflictError, BatchNotFoundError, BatchStateError

__all__ = [
    "CHUNK_SIZE",
    "RejectedRow",
    "add_jobs",
    "add_rejections",
    "create_batch",
    "find_and_lock_batch",
    "finish_intake",
    "lock_batch",
    "update_batch",
]

T = TypeVar("T")

CHUNK_SIZE = 1000
"""Rows per bulk statement: large enough to amortize a round trip, small enough to bound memory
and to stay under SQLite's limit on bound parameters."""


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


class RejectedRow(Protocol):
    """One refused row, as `mss_jobs.batches.manifest.RowRejection` carries it."""

    @property
    def line(self) -> int: ...
    @property
    def input_text(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


def create_batch(
    session: Session,
    *,
    model: str,
    params: Mapping[str, Any],
    source: Mapping[str, Any],
    lane: Lane = "bulk",
    priority: int = DEFAULT_PRIORITY,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    force: bool = False,
    batch_key: str | None = None,
) -> tuple[Batch, bool]:
    """Insert an active batch, or return the one created under `batch_key`; `created` says which.

    `params` are the effective params (`JobTemplate.params`), so equal specs hash equally. The
    existing batch is returned whatever its status (a cancelled one too). The same key with a
    different model, params, source or force flag raises `BatchKeyConflictError`; lane,
    priority and `max_in_flight` are scheduling, not identity, so the existing batch keeps its
    own. Race-safe like `job_intake.create_job`: of two concurrent creations with one key, the loser
    rolls back to a savepoint and returns the winner's row.
    """
    if lane not in LANES:
        raise ValueError(f"{lane=} must be one of {LANES}")
    check_priority(priority)
    if not 1 <= max_in_flight <= MAX_MAX_IN_FLIGHT:
        raise ValueError(f"{max_in_flight=} must be in [1, {MAX_MAX_IN_FLIGHT}]")
    now = utcnow()
    batch = Batch(
        id=uuid.uuid4(),
        batch_key=batch_key,
        status=BatchStatus.ACTIVE,
        model=model,
        params=dict(params),
        params_hash=params_hash(params),
        source=dict(source),
        lane=lane,
        priority=priority,
        max_in_flight=max_in_flight,
        force=force,
        accepted_rows=0,
        rejected_rows=0,
        created_at=now,
        updated_at=now,
    )

    def insert() -> None:
        session.add(batch)
        session.flush()

    if batch_key is None:
        insert()
        return batch, True
    key = batch_key
    existing = insert_unless_taken(
        session,
        insert=insert,
        find=lambda: session.scalars(select(Batch).where(Batch.batch_key == key)).one_or_none(),
    )
    if existing is None:
        return batch, True
    same = (
        existing.model == batch.model
        and existing.params_hash == batch.params_hash
        and existing.source == batch.source
        and existing.force == batch.force
    )
    if not same:
        raise BatchKeyConflictError(
            f"batch key {batch_key!r} was already used for batch {existing.id} "
            "with a different model, params, source or force flag"
        )
    return existing, False


def add_jobs(
    session: Session,
    *,
    batch_id: uuid.UUID,
    rows: Iterable[BatchRow],
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Insert `rows` as pending jobs of the batch, skipping lines it already has; how many new.

    Streams: `rows` is consumed `chunk_size` at a time, one multi-row INSERT each. A completed
    batch that gains rows becomes active again. Raises `BatchNotFoundError`, or
    `BatchStateError` for a cancelled batch (its rows would never run).
    """
    batch = lock_batch(session, batch_id)
    if batch.status is BatchStatus.CANCELLED:
        raise BatchStateError(f"batch {batch_id} is cancelled: it takes no more rows")
    inserted = 0
    for chunk in _chunks(rows, chunk_size):
        for row in chunk:
            _check_row(row)
        inserted += insert_batch_jobs(
            session, batch_id=batch_id, rows=chunk, now=utcnow(), force=batch.force
        )
    if inserted:
        reopen = {"status": BatchStatus.ACTIVE, "finished_at": None}
        update_batch(
            session,
            batch_id,
            accepted_rows=Batch.accepted_rows + inserted,
            **(reopen if batch.status is BatchStatus.COMPLETED else {}),
        )
    return inserted


def _check_row(row: BatchRow) -> None:
    check_priority(row.priority)
    if row.line < 1:
        raise ValueError(f"line {row.line} must be ≥ 1")


def add_rejections(
    session: Session,
    *,
    batch_id: uuid.UUID,
    rejections: Iterable[RejectedRow],
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Record refused rows, skipping lines already recorded; how many new. Streams like
    `add_jobs`. A cancelled batch still records them (the report stays complete)."""
    lock_batch(session, batch_id)
    inserted = 0
    for chunk in _chunks(rejections, chunk_size):
        values = [
            {
                "batch_id": batch_id,
                "line": rejection.line,
                "input_text": rejection.input_text,
                "code": rejection.code,
                "message": rejection.message,
            }
            for rejection in chunk
        ]
        inserted += insert_rows(
            session, table_of(BatchRejection), values, skip_conflicts_on=("batch_id", "line")
        )
    if inserted:
        update_batch(session, batch_id, rejected_rows=Batch.rejected_rows + inserted)
    return inserted


def finish_intake(session: Session, *, batch_id: uuid.UUID) -> bool:
    """Record that every row was read (idempotent); False for an unknown batch.

    Until then a batch cannot complete, even with no unfinished job: more rows may come.
    """
    stamped = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.intake_finished_at.is_(None))
        .values(intake_finished_at=utcnow(), updated_at=utcnow())
        .returning(Batch.id)
    ).first()
    return stamped is not None or get_batch(session, batch_id=batch_id) is not None


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"chunk size {size} must be ≥ 1")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
