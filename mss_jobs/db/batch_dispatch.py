"""Edge: a batch's jobs after intake — feeding them to the broker (`take_pending`,
`stale_queued`) and the changes of a whole batch: cancel, retry its failed jobs, complete, delete.

The broker never holds a whole catalog: a dispatcher calls `take_pending`, which moves at most
`max_in_flight − (queued + running)` pending jobs to `queued`, stamps `enqueued_at` and returns
them; the caller publishes their ids after committing. A `queued` job whose message the broker
lost (Redis restarted without persistence) is found again by `stale_queued` and re-published; a
duplicate message is harmless, since a worker claims a job only from `queued`. The transitions of
a whole batch end it (`cancel_batch`, `mark_completed`), re-open it (`retry_failed`) or remove it
(`delete_batch`).

Concurrency: every function that changes a batch's state first locks the batch row (`SELECT …
FOR UPDATE` on PostgreSQL, `batch_intake.find_and_lock_batch`; SQLite has one writer at a time),
so intake, dispatch, cancel, retry and completion of one batch apply one after the other, each on
committed data. Workers never take that lock: they change job rows only
(`job_transitions.py`). Job rows are picked with `FOR UPDATE SKIP LOCKED` where two dispatchers
could otherwise wait on, or take, the same rows.

Like `job_transitions.py`, functions take an open session, never commit, and return None (or
False) when a transition does not apply. Bulk statements bypass the ORM's identity map: re-read a
`Job` loaded earlier in the same session with `populate_existing` if it matters; their job
events are written in one statement each (`log_bulk`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CTE, Select, exists, select, update
from sqlalchemy.orm import Session

from mss_jobs.db.batch_intake import CHUNK_SIZE, find_and_lock_batch, update_batch
from mss_jobs.db.batch_queries import count_in_flight, job_line
from mss_jobs.db.job_transitions import rerun_values, sorted_statuses
from mss_jobs.db.schema import Batch, Job, JobEvent, table_of, utcnow
from mss_jobs.db.session import insert_rows
from mss_jobs.domain.lifecycle import (
    ACTIVE_STATUSES,
    LANES,
    BatchStatus,
    EventKind,
    JobStatus,
    Lane,
)

__all__ = [
    "Dispatch",
    "cancel_batch",
    "delete_batch",
    "log_bulk",
    "mark_completed",
    "retry_failed",
    "stale_queued",
    "take_pending",
]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A job to publish: its id, and where and how urgently (the batch's lane, the job's
    priority)."""

    job_id: uuid.UUID
    batch_id: uuid.UUID
    line: int
    priority: int
    lane: Lane


def take_pending(session: Session, *, batch_id: uuid.UUID, limit: int) -> list[Dispatch]:
    """Move up to `limit` pending jobs, in line order, to queued; publish them after commit.

    Never more than the batch's room (`max_in_flight` minus its queued and running jobs), and
    nothing unless the batch is active. Concurrent dispatchers of one batch queue on its row
    lock, each counting the room on what the other committed: no job is taken twice and the
    bound holds. The result is in line order.
    """
    if limit < 0:
        raise ValueError(f"{limit=} must be ≥ 0")
    batch = find_and_lock_batch(session, batch_id)
    if batch is None or batch.status is not BatchStatus.ACTIVE:
        return []
    room = min(limit, batch.max_in_flight - count_in_flight(session, batch_id=batch_id))
    if room <= 0:
        return []
    candidates = (
        select(Job.id)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.PENDING)
        .order_by(Job.batch_line)
        .limit(room)
        .with_for_update(skip_locked=True)
    )
    picked = _materialized(candidates, "picked")
    now = utcnow()
    taken = session.execute(
        update(Job)
        .where(Job.id.in_(select(picked.c.id)), Job.status == JobStatus.PENDING)
        .values(status=JobStatus.QUEUED, enqueued_at=now, updated_at=now)
        .returning(Job.id, Job.batch_line, Job.priority, Job.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    log_bulk(session, [(row.id, row.attempts, None) for row in taken], EventKind.QUEUED, at=now)
    lane = _lane(batch.lane)
    return sorted(
        (
            Dispatch(
                job_id=row.id,
                batch_id=batch_id,
                line=job_line(row.batch_line),
                priority=row.priority,
                lane=lane,
            )
            for row in taken
        ),
        key=lambda dispatch: dispatch.line,
    )


def stale_queued(
    session: Session,
    *,
    older_than: timedelta,
    limit: int = CHUNK_SIZE,
    now: datetime | None = None,
) -> list[Dispatch]:
    """Queued batch jobs published, and untouched, more than `older_than` ago: re-publish them.

    Their message may be lost (a broker restart), or merely waiting behind interactive work; a
    second message costs a no-op claim. Each returned job is re-stamped `enqueued_at = now`, so
    concurrent dispatchers (`SKIP LOCKED`) and the next call within `older_than` do not return it
    again. Oldest first.

    "Untouched" (`updated_at` too) leaves alone a job a worker put back to `queued` while a
    Celery retry of it waits (`recovery.requeue_for_retry`): that retry is its message. Choose
    `older_than` longer than the longest retry countdown, or the early copy would run the job
    and the retry would then re-claim it while it runs.
    """
    if limit < 0:
        raise ValueError(f"{limit=} must be ≥ 0")
    now = now or utcnow()
    candidates = (
        select(Job.id)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.batch_id.is_not(None),
            Job.enqueued_at < now - older_than,
            Job.updated_at < now - older_than,
        )
        .order_by(Job.enqueued_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    picked = _materialized(candidates, "picked")
    stamped = session.execute(
        update(Job)
        .where(Job.id.in_(select(picked.c.id)), Job.status == JobStatus.QUEUED)
        .values(enqueued_at=now, updated_at=now)
        .returning(Job.id, Job.batch_id, Job.batch_line, Job.priority)
        .execution_options(synchronize_session=False)
    ).all()
    batch_ids = {row.batch_id for row in stamped}
    lanes = dict(session.execute(select(Batch.id, Batch.lane).where(Batch.id.in_(batch_ids))).all())
    dispatches = []
    for row in stamped:
        assert row.batch_id is not None  # selected for it
        dispatches.append(
            Dispatch(
                job_id=row.id,
                batch_id=row.batch_id,
                line=job_line(row.batch_line),
                priority=row.priority,
                lane=_lane(lanes[row.batch_id]),
            )
        )
    return sorted(dispatches, key=lambda dispatch: (str(dispatch.batch_id), dispatch.line))


def _materialized(query: Select[Any], name: str) -> CTE:
    """`WITH name AS MATERIALIZED (query)`: evaluated exactly once.

    PostgreSQL may otherwise run a `LIMIT … FOR UPDATE SKIP LOCKED` subquery of an `UPDATE …
    WHERE id IN (…)` more than once, and each run skips different rows: the update then changes
    more rows than the limit (seen here: four rows for a limit of three).
    """
    return query.cte(name).prefix_with("MATERIALIZED", dialect="postgresql")


def _lane(lane: str) -> Lane:
    assert lane in LANES, f"unknown lane {lane!r}"  # the CHECK constraint holds it
    return lane


def cancel_batch(session: Session, *, batch_id: uuid.UUID) -> int | None:
    """active → cancelled, with every pending, queued or running job; how many jobs it cancelled.

    None when the batch is unknown, completed or already cancelled. Running workers are not
    interrupted: as with `job_transitions.cancel_job`, their later writes stop applying.
    Published messages of queued jobs stay on the broker and end as no-op claims.
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
        values={"status": JobStatus.PENDING, **rerun_values()},
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
    unfinished = exists().where(
        Job.batch_id == batch_id, Job.status.in_(sorted_statuses(ACTIVE_STATUSES))
    )
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
            Job.status.in_(sorted_statuses(from_statuses)),
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
