"""Edge: every state change of a job — claim, progress, the input and output writes, the outcome,
cancel, retry, delete — and the guarded UPDATE they are built from.

Each transition is one `UPDATE … WHERE id = :id AND status IN (…) [AND attempts = :attempt]
RETURNING …` (`transition`), so the database decides atomically whether it applies: two workers
cannot both claim a queued job, and a worker finishing late cannot resurrect a job the user
cancelled. A transition returns the updated `Job`, or None when it did not apply (wrong state,
unknown id, or a stale `attempt`). Each applied one appends a `job_events` row (`log_event`).
Functions take an open session and never commit: the caller's `transaction()` decides the unit of
work (enqueue only after it commits). Outputs follow the same rule: `record_output` writes only
while the job runs.

Fencing: `claim_job` increments `attempts` and hands the new value to the worker; a worker that
passes it back as `attempt=` to `update_progress`, `record_input`, `record_output`,
`mark_succeeded`, `mark_failed` (and `recovery.requeue_for_retry`, `results.defer_job`,
`results.mark_reused`) is ignored once a redelivery has claimed the job again (it became a
zombie). Elsewhere: creating jobs (`job_intake.py`), recovering from a failed worker
(`recovery.py`), the result cache (`results.py`), whole batches (`batch_dispatch.py`).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Insert, case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from mss_jobs.db.schema import Job, JobEvent, JobOutput, utcnow
from mss_jobs.domain.lifecycle import ACTIVE_STATUSES, RETRYABLE_STATUSES, EventKind, JobStatus

__all__ = [
    "Reclaim",
    "cancel_job",
    "claim_job",
    "delete_job",
    "failed_values",
    "log_event",
    "mark_failed",
    "mark_succeeded",
    "record_input",
    "record_output",
    "rerun_values",
    "retry_job",
    "sorted_statuses",
    "transition",
    "update_progress",
]


def transition(
    session: Session,
    *,
    job_id: uuid.UUID,
    from_statuses: Sequence[JobStatus] | frozenset[JobStatus],
    attempt: int | None = None,
    values: Mapping[str, Any],
    also: Sequence[ColumnElement[bool]] = (),
    event: EventKind | None = None,
    message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Job | None:
    """Apply `values` to the job if it is in `from_statuses` (and at `attempt`); atomic.

    With `event`, a change that applied also appends that event (`log_event`, with `message` and
    `detail`).
    """
    conditions: list[ColumnElement[bool]] = [
        Job.id == job_id,
        Job.status.in_(sorted_statuses(from_statuses)),
        *also,
    ]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    statement = (
        update(Job)
        .where(*conditions)
        .values(updated_at=utcnow(), **values)
        .returning(Job)
        .execution_options(populate_existing=True)
    )
    job = session.scalars(statement).one_or_none()
    if job is not None and event is not None:
        log_event(session, job, event, message=message, detail=detail)
    return job


def log_event(
    session: Session,
    job: Job,
    kind: EventKind,
    *,
    message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append a `kind` event for `job` at its current attempt and worker."""
    session.add(
        JobEvent(
            job_id=job.id,
            at=utcnow(),
            kind=kind,
            attempt=job.attempts,
            worker=job.worker,
            message=message,
            detail=detail,
        )
    )


def sorted_statuses(statuses: Sequence[JobStatus] | frozenset[JobStatus]) -> list[JobStatus]:
    """A stable order, so equal statements render equal SQL (the statement cache)."""
    return sorted(statuses, key=lambda status: status.value)


def failed_values(code: str, message: str, *, at: datetime | None = None) -> dict[str, Any]:
    """The columns of a job that fails with `code` and `message` (at `at`, default now)."""
    return {
        "status": JobStatus.FAILED,
        "error_code": code,
        "error_message": message,
        "finished_at": at or utcnow(),
    }


def rerun_values() -> dict[str, Any]:
    """The columns a job that will run again starts from: no error, progress, worker or times."""
    return {
        "error_code": None,
        "error_message": None,
        "progress": 0.0,
        "stage": None,
        "worker": None,
        "started_at": None,
        "finished_at": None,
    }


class Reclaim(StrEnum):
    """Why a claim may also take a job that is still `running` (see `claim_job`)."""

    REDELIVERY = "redelivery"
    """The broker redelivered the task: the worker running it died. Logged as `redelivered`,
    one event per death (`recovery.worker_deaths` counts them)."""
    RETRY = "retry"
    """Celery retried the task after a transient error and the job could not be put back to
    `queued` (the database was what failed). Logged as `claimed`: nobody died."""


def claim_job(
    session: Session, *, job_id: uuid.UUID, worker: str, reclaim: Reclaim | None = None
) -> Job | None:
    """queued → running, attempts + 1, for `worker`; None if the job is not claimable.

    Exactly one of several concurrent claims of a queued job wins. With `reclaim`, a job that is
    still `running` is taken too: only for a task the broker redelivered or Celery retried,
    never for a first delivery — two live workers would then run one job. Finished and cancelled
    jobs are never claimed.
    """
    now = utcnow()
    values = {
        "status": JobStatus.RUNNING,
        "attempts": Job.attempts + 1,
        "worker": worker,
        "started_at": now,
        "finished_at": None,
        "progress": 0.0,
        "stage": None,
    }
    job = transition(session, job_id=job_id, from_statuses=[JobStatus.QUEUED], values=values)
    kind, message = EventKind.CLAIMED, None
    if job is None and reclaim is not None:
        job = transition(session, job_id=job_id, from_statuses=[JobStatus.RUNNING], values=values)
        if reclaim is Reclaim.REDELIVERY:
            kind = EventKind.REDELIVERED
        else:
            message = "re-claimed by a retry of the attempt before"
    if job is not None:
        log_event(session, job, kind, message=message)
    return job


def update_progress(
    session: Session,
    *,
    job_id: uuid.UUID,
    progress: float,
    stage: str | None = None,
    attempt: int | None = None,
) -> bool:
    """Set progress (0..1) and stage of a running job; False once it is no longer running.

    Entering a new stage appends a `progress` event; plain progress updates do not (they are
    frequent and only the latest matters).
    """
    if not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
        raise ValueError(f"{progress=} must be in [0, 1]")
    values: dict[str, Any] = {"progress": progress}
    if stage is not None:
        values["stage"] = stage
        entered = transition(
            session,
            job_id=job_id,
            from_statuses=[JobStatus.RUNNING],
            attempt=attempt,
            values=values,
            also=[Job.stage.is_distinct_from(stage)],
            event=EventKind.PROGRESS,
            message=stage,
            detail={"progress": progress},
        )
        if entered is not None:
            return True
    job = transition(
        session, job_id=job_id, from_statuses=[JobStatus.RUNNING], attempt=attempt, values=values
    )
    return job is not None


def record_input(
    session: Session,
    *,
    job_id: uuid.UUID,
    sha256: str,
    format: str,
    sample_rate: int,
    channels: int,
    duration_seconds: float,
    attempt: int | None = None,
) -> bool:
    """Store what the worker learnt when it fetched and probed the input; False if the job is
    not active (or, with `attempt`, not running at that attempt: the write is a zombie's)."""
    job = transition(
        session,
        job_id=job_id,
        from_statuses=ACTIVE_STATUSES if attempt is None else [JobStatus.RUNNING],
        attempt=attempt,
        values={
            "input_sha256": sha256,
            "input_format": format,
            "input_sample_rate": sample_rate,
            "input_channels": channels,
            "input_duration_seconds": duration_seconds,
        },
    )
    return job is not None


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
    UPDATE`: a task re-run after a worker crash uploads to the same deterministic keys and
    records the same stems again, and overwrites its earlier rows instead of duplicating them.
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


def mark_succeeded(
    session: Session, *, job_id: uuid.UUID, attempt: int | None = None
) -> Job | None:
    """running → succeeded (progress 1); None if it was cancelled, finished or reclaimed."""
    return transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={"status": JobStatus.SUCCEEDED, "progress": 1.0, "finished_at": utcnow()},
        event=EventKind.SUCCEEDED,
    )


def mark_failed(
    session: Session,
    *,
    job_id: uuid.UUID,
    code: str,
    message: str,
    attempt: int | None = None,
) -> Job | None:
    """running → failed with an error `code` (`MssError.code`) and message; None if not running."""
    return transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values=failed_values(code, message),
        event=EventKind.FAILED,
        message=message,
        detail={"code": code},
    )


def cancel_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """queued or running → cancelled; None when the job is already finished (or unknown).

    A running worker is not interrupted here: its later writes simply stop applying.
    """
    return transition(
        session,
        job_id=job_id,
        from_statuses=ACTIVE_STATUSES,
        values={"status": JobStatus.CANCELLED, "finished_at": utcnow()},
        event=EventKind.CANCELLED,
    )


def retry_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """failed or cancelled → queued, error cleared, attempts kept; None otherwise.

    The caller enqueues the job id again after committing — unless it belongs to a batch: then
    it goes back to `pending` and the batch's dispatcher publishes it, so the batch never has
    more than `max_in_flight` jobs in the broker.
    """
    return transition(
        session,
        job_id=job_id,
        from_statuses=RETRYABLE_STATUSES,
        values={
            "status": case(
                (Job.batch_id.is_(None), JobStatus.QUEUED.value), else_=JobStatus.PENDING.value
            ),
            **rerun_values(),
            "enqueued_at": None,
        },
        event=EventKind.RETRIED,
    )


def delete_job(session: Session, *, job_id: uuid.UUID) -> bool:
    """Delete the job with its outputs and events (database cascade); False if unknown.

    Stored objects are not touched: list the outputs first to delete them from storage.
    """
    deleted = session.execute(delete(Job).where(Job.id == job_id).returning(Job.id)).first()
    return deleted is not None
