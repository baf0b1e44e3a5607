"""Edge: the data functions of batches — intake, dispatch, cancel, retry, completion.

This module is also the one import callers need: it re-exports the reads (`batch_queries.py`:
counts, progress and pace, a page of jobs, the report). Rows are written by `bulk.py`.

A batch is many jobs sharing one spec. Its rows arrive as a stream (a manifest, an S3 listing)
and become `pending` jobs in bulk, chunk by chunk, with `INSERT … ON CONFLICT (batch_id,
batch_line) DO NOTHING`: reading the same manifest again (a resubmission, a resumed intake after
a crash) inserts nothing twice, and the counters on the batch row count only what was inserted.

The broker never holds a whole catalog: a dispatcher calls `take_pending`, which moves at most
`max_in_flight − (queued + running)` pending jobs to `queued`, stamps `enqueued_at` and returns
them; the caller publishes their ids after committing. A `queued` job whose message the broker
lost (Redis restarted without persistence) is found again by `stale_queued` and re-published; a
duplicate message is harmless, since a worker claims a job only from `queued`.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Protocol, TypeVar

from sqlalchemy import CTE, Select, Table, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from mss_jobs.db.bulk import BatchRow, insert_batch_jobs, insert_rows
from mss_jobs.db.enums import (
    ACTIVE_STATUSES,
    BATCH_LANES,
    BatchLane,
    BatchStatus,
    EventKind,
    JobStatus,
)
from mss_jobs.db.jobs import params_hash
from mss_jobs.db.models import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_PRIORITY,
    MAX_MAX_IN_FLIGHT,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Batch,
    BatchRejection,
    Job,
    JobEvent,
    utcnow,
)
from mss_jobs.errors import ConfigError, PermanentError

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

CHUNK_SIZE = 1000
"""Rows per bulk statement: large enough to amortize a round trip, small enough to bound memory
and to stay under SQLite's limit on bound parameters."""

T = TypeVar("T")


class BatchKeyConflictError(ConfigError):
    """A batch key was reused for a different batch (model, params, source or force differ)."""

    code = "batch.key_conflict"


class BatchNotFoundError(PermanentError):
    code = "batch.not_found"


class BatchStateError(PermanentError):
    """The batch is in a state the requested operation does not apply to (e.g. cancelled)."""

    code = "batch.state_conflict"


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


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A job to publish: its id, and where and how urgently (the batch's lane, the job's
    priority)."""

    job_id: uuid.UUID
    batch_id: uuid.UUID
    line: int
    priority: int
    lane: BatchLane


# ---------------------------------------------------------------------------------------------
# creation and intake
# ---------------------------------------------------------------------------------------------


def create_batch(
    session: Session,
    *,
    model: str,
    params: Mapping[str, Any],
    source: Mapping[str, Any],
    lane: BatchLane = "bulk",
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
    own. Race-safe like `jobs.create_job`: of two concurrent creations with one key, the loser
    rolls back to a savepoint and returns the winner's row.
    """
    if lane not in BATCH_LANES:
        raise ValueError(f"{lane=} must be one of {BATCH_LANES}")
    _check_priority(priority)
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
    if batch_key is None:
        session.add(batch)
        session.flush()
        return batch, True
    existing = _by_key(session, batch_key)
    if existing is None:
        try:
            with session.begin_nested():
                session.add(batch)
                session.flush()
        except IntegrityError:
            existing = _by_key(session, batch_key)
            if existing is None:  # the violation was not about the key
                raise
        else:
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


def _by_key(session: Session, key: str) -> Batch | None:
    return session.scalars(select(Batch).where(Batch.batch_key == key)).one_or_none()


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
    batch = _lock_batch(session, batch_id)
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
        _update_batch(
            session,
            batch_id,
            accepted_rows=Batch.accepted_rows + inserted,
            **(reopen if batch.status is BatchStatus.COMPLETED else {}),
        )
    return inserted


def _check_row(row: BatchRow) -> None:
    _check_priority(row.priority)
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
    _lock_batch(session, batch_id)
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
            session, _table(BatchRejection), values, skip_conflicts_on=("batch_id", "line")
        )
    if inserted:
        _update_batch(session, batch_id, rejected_rows=Batch.rejected_rows + inserted)
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


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------


def take_pending(session: Session, *, batch_id: uuid.UUID, limit: int) -> list[Dispatch]:
    """Move up to `limit` pending jobs, in line order, to queued; publish them after commit.

    Never more than the batch's room (`max_in_flight` minus its queued and running jobs), and
    nothing unless the batch is active. Concurrent dispatchers of one batch queue on its row
    lock, each counting the room on what the other committed: no job is taken twice and the
    bound holds. The result is in line order.
    """
    if limit < 0:
        raise ValueError(f"{limit=} must be ≥ 0")
    batch = _find_and_lock_batch(session, batch_id)
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
    _log_bulk(session, [(row.id, row.attempts, None) for row in taken], EventKind.QUEUED, at=now)
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


# ---------------------------------------------------------------------------------------------
# batch transitions
# ---------------------------------------------------------------------------------------------


def cancel_batch(session: Session, *, batch_id: uuid.UUID) -> int | None:
    """active → cancelled, with every pending, queued or running job; how many jobs it cancelled.

    None when the batch is unknown, completed or already cancelled. Running workers are not
    interrupted: as with `jobs.cancel_job`, their later writes stop applying. Published messages
    of queued jobs stay on the broker and end as no-op claims.
    """
    batch = _find_and_lock_batch(session, batch_id)
    if batch is None or batch.status is not BatchStatus.ACTIVE:
        return None
    now = utcnow()
    _update_batch(session, batch_id, status=BatchStatus.CANCELLED, finished_at=now)
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
    batch = _find_and_lock_batch(session, batch_id)
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
        _update_batch(session, batch_id, status=BatchStatus.ACTIVE, finished_at=None)
    return retried


def mark_completed(session: Session, *, batch_id: uuid.UUID) -> bool:
    """active → completed once its rows are all read and no job is pending, queued or running.

    True when it applied. The dispatcher calls it after a batch's last jobs finish.
    """
    batch = _find_and_lock_batch(session, batch_id)
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
    deleted = session.execute(
        _table(Batch).delete().where(_table(Batch).c.id == batch_id).returning(_table(Batch).c.id)
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
        _log_bulk(session, [(row.id, row.attempts, row.worker) for row in rows], kind, at=now)
        changed += len(rows)
    return changed


def _line_windows(session: Session, batch_id: uuid.UUID) -> Iterator[tuple[int, int | None]]:
    """(low, high] line ranges of `CHUNK_SIZE` jobs each covering the whole batch; the last
    range is open (high None), so jobs added meanwhile are covered too."""
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


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _lock_batch(session: Session, batch_id: uuid.UUID) -> Batch:
    """`_find_and_lock_batch`, raising `BatchNotFoundError` for an unknown batch."""
    batch = _find_and_lock_batch(session, batch_id)
    if batch is None:
        raise BatchNotFoundError(f"no batch {batch_id}")
    return batch


def _find_and_lock_batch(session: Session, batch_id: uuid.UUID) -> Batch | None:
    """The batch row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    return session.scalars(
        select(Batch)
        .where(Batch.id == batch_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def _update_batch(session: Session, batch_id: uuid.UUID, **values: Any) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id).values(updated_at=utcnow(), **values))


def _log_bulk(
    session: Session,
    changed: Sequence[tuple[uuid.UUID, int, str | None]],
    kind: EventKind,
    *,
    at: datetime,
) -> None:
    """One `job_events` row of `kind` per (job id, attempt, worker), in one statement."""
    insert_rows(
        session,
        _table(JobEvent),
        [
            {"job_id": job_id, "at": at, "kind": kind, "attempt": attempt, "worker": worker}
            for job_id, attempt, worker in changed
        ],
    )


def _materialized(query: Select[Any], name: str) -> CTE:
    """`WITH name AS MATERIALIZED (query)`: evaluated exactly once.

    PostgreSQL may otherwise run a `LIMIT … FOR UPDATE SKIP LOCKED` subquery of an `UPDATE …
    WHERE id IN (…)` more than once, and each run skips different rows: the update then changes
    more rows than the limit (seen here: four rows for a limit of three).
    """
    return query.cte(name).prefix_with("MATERIALIZED", dialect="postgresql")


def _table(entity: type[Any]) -> Table:
    table = entity.__table__
    assert isinstance(table, Table)
    return table


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"chunk size {size} must be ≥ 1")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _check_priority(priority: int) -> None:
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"{priority=} must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]")


def _sorted(statuses: frozenset[JobStatus]) -> list[JobStatus]:
    """A stable order, so equal statements render equal SQL (the statement cache)."""
    return sorted(statuses, key=lambda status: status.value)


def _line(line: int | None) -> int:
    assert line is not None, "batch jobs always have a line"
    return line


def _lane(lane: str) -> BatchLane:
    assert lane in BATCH_LANES, f"unknown lane {lane!r}"  # the CHECK constraint holds it
    return lane
