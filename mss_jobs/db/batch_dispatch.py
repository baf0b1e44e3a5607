"""Edge: feeding a batch's jobs to the broker — `take_pending` and `stale_queued`.

The broker never holds a whole catalog: a dispatcher calls `take_pending`, which moves at most
`max_in_flight − (queued + running)` pending jobs to `queued`, stamps `enqueued_at` and returns
them; the caller publishes their ids after committing. A `queued` job whose message the broker
lost (Redis restarted without persistence) is found again by `stale_queued` and re-published; a
duplicate message is harmless, since a worker claims a job only from `queued`. Job rows are
picked with `FOR UPDATE SKIP LOCKED`, so two dispatchers neither wait on nor take the same rows.
Callers import these from `mss_jobs.db.batches`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CTE, Select, select, update
from sqlalchemy.orm import Session

from mss_jobs.db.batch_queries import count_in_flight
from mss_jobs.db.batch_writes import CHUNK_SIZE, find_and_lock_batch, log_bulk
from mss_jobs.db.models import Batch, Job, utcnow
from mss_jobs.domain.lifecycle import LANES, BatchStatus, EventKind, JobStatus, Lane

__all__ = ["Dispatch", "stale_queued", "take_pending"]


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
                line=_line(row.batch_line),
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
    Celery retry of it waits (`jobs.requeue_for_retry`): that retry is its message. Choose
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
                line=_line(row.batch_line),
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


def _line(line: int | None) -> int:
    assert line is not None, "batch jobs always have a line"
    return line


def _lane(lane: str) -> Lane:
    assert lane in LANES, f"unknown lane {lane!r}"  # the CHECK constraint holds it
    return lane
