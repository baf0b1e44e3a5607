"""Edge: the data functions of batches, in one import; here, cancel, retry, completion, delete.

This module is the one import callers need. It holds the transitions of a whole batch and
re-exports the rest: intake (`batch_intake.py`: create, add rows and rejections, finish), dispatch
(`batch_dispatch.py`: take pending jobs, find stale queued ones), the errors and the shared
locking (`batch_writes.py`) and the reads (`batch_queries.py`: counts, progress and pace, a page
of jobs, the report). Rows are written by `bulk.py`.

A batch is many jobs sharing one spec. Its rows arrive as a stream and become `pending` jobs in
bulk; a dispatcher moves them to `queued` a few at a time and publishes them after commit; the
transitions here end the batch (`cancel_batch`, `mark_completed`), re-open it (`retry_failed`)
or remove it (`delete_batch`).

Concurrency: every function that changes a batch's state first locks the batch row (`SELECT …
FOR UPDATE` on PostgreSQL; SQLite has one writer at a time), so intake, dispatch, cancel, retry
and completion of one batch apply one after the other, each on committed data. Workers never
take that lock: they change job rows only, through `mss_jobs.db.jobs`. Job rows are picked with
`FOR UPDATE SKIP LOCKED` where two dispatchers could otherwise wait on, or take, the same rows.
Callers should commit intake chunk by chunk: an open intake transaction holds the batch row.

Like `jobs.py`, functions take an open session, never commit, and return None (or False) when a
transition does not apply. Bulk statements bypass the ORM's identity map: re-read a `Job` loaded
earlier in the same session with `populate_existing` if it matters.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from mss_jobs.db.batch_dispatch import Dispatch, stale_queued, take_pending
from mss_jobs.db.batch_intake import (
    RejectedRow,
    add_jobs,
    add_rejections,
    create_batch,
    finish_intake,
)
from mss_jobs.db.batch_queries import (
    MAX_PAGE_SIZE,
    REJECTED,
    BatchProgress,
    ReportRow,
    batch_progress,
    count_by_status,
    count_in_flight,
    get_batch,
    iter_report,
    list_batch_jobs,
)
from mss_jobs.db.batch_writes import (
    CHUNK_SIZE,
    BatchKeyConflictError,
    BatchNotFoundError,
    BatchStateError,
    find_and_lock_batch,
    log_bulk,
    table_of,
    update_batch,
)
from mss_jobs.db.bulk import BatchRow
from mss_jobs.db.models import Batch, Job, utcnow
from mss_jobs.domain.lifecycle import ACTIVE_STATUSES, BatchStatus, EventKind, JobStatus

__all__ = [
    "CHUNK_SIZE",
    "MAX_PAGE_SIZE",
    "REJECTED",
    "BatchKeyConflictError",
    "BatchNotFoundError",
    "BatchProgress",
    "BatchRow",
    "BatchStateError",
    "Dispatch",
    "RejectedRow",
    "ReportRow",
    "add_jobs",
    "add_rejections",
    "batch_progress",
    "cancel_batch",
    "count_by_status",
    "count_in_flight",
    "create_batch",
    "delete_batch",
    "finish_intake",
    "get_batch",
    "iter_report",
    "list_batch_jobs",
    "mark_completed",
    "retry_failed",
    "stale_queued",
    "take_pending",
]


def cancel_batch(session: Session, *, batch_id: uuid.UUID) -> int | None:
    """active → cancelled, with every pending, queued or running job; how many jobs it cancelled.

    None when the batch is unknown, completed or already cancelled. Running workers are not
    interrupted: as with `jobs.cancel_job`, their later writes stop applying. Published messages
    of queued jobs stay on the broker and end as no-op claims.
    """
    batch = find_and_lock_batch(session, batch_id)
    if batch is None or batch.status is not BatchStatus.ACTIVE:
        return None
    now = utcnow()
    update_batch(session, batch_id, status=BatchStatus.CANCELLED, finished_at=now)
    return _transition_jobs(
        session,
        batch_id=batch_id,
        from_statuses=ACTIVE_STATUSES,
        values={"status": JobStatus.CANCELLED, "finished_at": now},
        kind=EventKind.CANCELLED,
    )


def retry_failed(session: Session, *, batch_id: uuid.UUID) -> int | None:
    """Make the batch's failed jobs pending again (attempts kept); how many.

    The dispatcher then feeds them like new rows. A completed batch with failed jobs becomes
    active again. None when the batch is unknown or cancelled.
    """
    batch = find_and_lock_batch(session, batch_id)
    if batch is None or batch.status is BatchStatus.CANCELLED:
        return None
    retried = _transition_jobs(
        session,
        batch_id=batch_id,
        from_statuses=frozenset({JobStatus.FAILED}),
        values={
            "status": JobStatus.PENDING,
            "error_code": None,
            "error_message": None,
            "progress": 0.0,
            "stage": None,
            "worker": None,
            "started_at": None,
            "finished_at": None,
        },
        kind=EventKind.RETRIED,
    )
    if retried and batch.status is BatchStatus.COMPLETED:
        update_batch(session, batch_id, status=BatchStatus.ACTIVE, finished_at=None)
    return retried


def mark_completed(session: Session, *, batch_id: uuid.UUID) -> bool:
    """active → completed once its rows are all read and no job is pending, queued or running.

    True when it applied. The dispatcher calls it after a batch's last jobs finish.
    """
    batch = find_and_lock_batch(session, batch_id)
    if batch is None:
        return False
    unfinished = exists().where(Job.batch_id == batch_id, Job.status.in_(_sorted(ACTIVE_STATUSES)))
    now = utcnow()
    done = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status == BatchStatus.ACTIVE,
            Batch.intake_finished_at.is_not(None),
            ~unfinished,
        )
        .values(status=BatchStatus.COMPLETED, finished_at=now, updated_at=now)
        .returning(Batch.id)
    ).first()
    return done is not None


def delete_batch(session: Session, *, batch_id: uuid.UUID) -> bool:
    """Delete the batch with its jobs, their outputs and events, and its rejections (cascade).

    Stored objects are not touched: export the report first to delete them from storage.
    """
    batches = table_of(Batch)
    deleted = session.execute(
        batches.delete().where(batches.c.id == batch_id).returning(batches.c.id)
    ).first()
    return deleted is not None


def _transition_jobs(
    session: Session,
    *,
    batch_id: uuid.UUID,
    from_statuses: frozenset[JobStatus],
    values: Mapping[str, Any],
    kind: EventKind,
) -> int:
    """Apply `values` to the batch's jobs in `from_statuses`, a window of lines at a time, and
    log `kind` for each; how many changed. Windows bound the rows held in memory."""
    changed = 0
    for low, high in _line_windows(session, batch_id):
        now = utcnow()
        conditions = [
            Job.batch_id == batch_id,
            Job.status.in_(_sorted(from_statuses)),
            Job.batch_line > low,
        ]
        if high is not None:
            conditions.append(Job.batch_line <= high)
        rows = session.execute(
            update(Job)
            .where(*conditions)
            .values(updated_at=now, **values)
            .returning(Job.id, Job.attempts, Job.worker)
            .execution_options(synchronize_session=False)
        ).all()
        log_bulk(session, [(row.id, row.attempts, row.worker) for row in rows], kind, at=now)
        changed += len(rows)
    return changed


def _line_windows(session: Session, batch_id: uuid.UUID) -> Iterator[tuple[int, int | None]]:
    """(low, high] line ranges of `CHUNK_SIZE` jobs each covering the whole batch; the last
    range is open (high None), so jobs added meanwhile are covered too. `CHUNK_SIZE` is this
    module's name, read at call time: tests lower it to get several windows."""
    low = 0
    while True:
        high = session.scalar(
            select(Job.batch_line)
            .where(Job.batch_id == batch_id, Job.batch_line > low)
            .order_by(Job.batch_line)
            .offset(CHUNK_SIZE - 1)
            .limit(1)
        )
        yield low, high
        if high is None:
            return
        low = high


def _sorted(statuses: frozenset[JobStatus]) -> list[JobStatus]:
    """A stable order, so equal statements render equal SQL (the statement cache)."""
    return sorted(statuses, key=lambda status: status.value)
