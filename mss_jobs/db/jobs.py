"""Edge: the data functions the API and the workers share — every job state change lives here.

This module is also the one import callers need: it re-exports the reads (`queries.py`) and the
output rows (`outputs.py`).

Each transition is one `UPDATE … WHERE id = :id AND status IN (…) RETURNING …`, so the database
decides atomically whether it applies: two workers cannot both claim a queued job, and a worker
finishing late cannot resurrect a job the user cancelled. A transition returns the updated `Job`,
or None when it did not apply (wrong state, unknown id, or a stale `attempt`). Each applied one
appends a `job_events` row. Functions take an open session and never commit: the caller's
`transaction()` decides the unit of work (enqueue only after it commits). Outputs follow the
same rule: `record_output` writes only while the job runs.

Fencing: `claim_job` increments `attempts` and hands the new value to the worker; a worker that
passes it back as `attempt=` to `update_progress`, `record_output`, `mark_succeeded` and
`mark_failed` is ignored once a redelivery has claimed the job again (it became a zombie).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mss_jobs.db.enums import ACTIVE_STATUSES, RETRYABLE_STATUSES, EventKind, JobStatus
from mss_jobs.db.models import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    JobEvent,
    utcnow,
)
from mss_jobs.db.outputs import list_outputs, record_output
from mss_jobs.db.queries import (
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    find_duplicate,
    get_job,
    list_events,
    list_jobs,
)
from mss_jobs.errors import ConfigError

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_PAGE_SIZE",
    "cancel_job",
    "claim_job",
    "create_job",
    "decode_cursor",
    "delete_job",
    "encode_cursor",
    "find_duplicate",
    "get_job",
    "list_events",
    "list_jobs",
    "list_outputs",
    "mark_failed",
    "mark_succeeded",
    "params_hash",
    "record_input",
    "record_output",
    "retry_job",
    "update_progress",
]


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `params`: sorted keys, no spaces, UTF-8.

    Pass the *effective* params (defaults filled in), or equal requests hash differently.
    """
    canonical = json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# creation
# ---------------------------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    model: str,
    params: Mapping[str, Any],
    input_uri: str,
    priority: int = DEFAULT_PRIORITY,
    idempotency_key: str | None = None,
    input_sha256: str | None = None,
    input_format: str | None = None,
    input_sample_rate: int | None = None,
    input_channels: int | None = None,
    input_duration_seconds: float | None = None,
    batch_id: uuid.UUID | None = None,
) -> Job:
    """Insert a queued job, or return the job already created under `idempotency_key`.

    Race-safe: of two concurrent requests with one key, one inserts and the other meets the
    unique constraint, rolls back to a savepoint and returns the winner's row. Reusing a key for a
    different request (model, params or input differ) raises `ConfigError`.
    """
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"{priority=} must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
    job = Job(
        id=uuid.uuid4(),
        status=JobStatus.QUEUED,
        model=model,
        params=dict(params),
        params_hash=params_hash(params),
        input_uri=input_uri,
        input_sha256=input_sha256,
        input_format=input_format,
        input_sample_rate=input_sample_rate,
        input_channels=input_channels,
        input_duration_seconds=input_duration_seconds,
        priority=priority,
        idempotency_key=idempotency_key,
        batch_id=batch_id,
    )
    if idempotency_key is None:
        _insert_new(session, job)
        return job

    existing = _by_idempotency_key(session, idempotency_key)
    if existing is None:
        try:
            with session.begin_nested():
                _insert_new(session, job)
        except IntegrityError:
            existing = _by_idempotency_key(session, idempotency_key)
            if existing is None:  # the violation was not about the key
                raise
        else:
            return job
    _check_same_request(existing, job)
    return existing


def _insert_new(session: Session, job: Job) -> None:
    now = utcnow()
    job.created_at = job.updated_at = now
    session.add(job)
    session.add(JobEvent(job_id=job.id, at=now, kind=EventKind.QUEUED, attempt=0))
    session.flush()


def _by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


def _check_same_request(existing: Job, wanted: Job) -> None:
    same_input = (
        existing.input_sha256 == wanted.input_sha256
        if existing.input_sha256 is not None and wanted.input_sha256 is not None
        else existing.input_uri == wanted.input_uri
    )
    same_work = existing.model == wanted.model and existing.params_hash == wanted.params_hash
    if not (same_work and same_input):
        raise ConfigError(
            f"idempotency key {wanted.idempotency_key!r} was already used for job {existing.id} "
            "with a different model, params or input"
        )


# ---------------------------------------------------------------------------------------------
# transitions
# ---------------------------------------------------------------------------------------------


def _transition(
    session: Session,
    *,
    job_id: uuid.UUID,
    from_statuses: Sequence[JobStatus] | frozenset[JobStatus],
    attempt: int | None = None,
    values: Mapping[str, Any],
    also: Sequence[ColumnElement[bool]] = (),
) -> Job | None:
    """Apply `values` to the job if it is in `from_statuses` (and at `attempt`); atomic."""
    conditions: list[ColumnElement[bool]] = [
        Job.id == job_id,
        Job.status.in_(sorted(from_statuses, key=lambda s: s.value)),
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
    return session.scalars(statement).one_or_none()


def _log(
    session: Session,
    job: Job,
    kind: EventKind,
    *,
    message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
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


def claim_job(
    session: Session, *, job_id: uuid.UUID, worker: str, allow_reclaim: bool = False
) -> Job | None:
    """queued → running, attempts + 1, for `worker`; None if the job is not claimable.

    Exactly one of several concurrent claims of a queued job wins. `allow_reclaim=True` also
    takes a job that is still `running`: only for a task the broker redelivered because its
    worker died (Celery `delivery_info["redelivered"]`), never for a first delivery — two live
    workers would then run one job. Finished and cancelled jobs are never claimed.
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
    job = _transition(session, job_id=job_id, from_statuses=[JobStatus.QUEUED], values=values)
    kind = EventKind.CLAIMED
    if job is None and allow_reclaim:
        job = _transition(session, job_id=job_id, from_statuses=[JobStatus.RUNNING], values=values)
        kind = EventKind.REDELIVERED
    if job is not None:
        _log(session, job, kind)
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
        entered = _transition(
            session,
            job_id=job_id,
            from_statuses=[JobStatus.RUNNING],
            attempt=attempt,
            values=values,
            also=[Job.stage.is_distinct_from(stage)],
        )
        if entered is not None:
            _log(session, entered, EventKind.PROGRESS, message=stage, detail={"progress": progress})
            return True
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values=values,
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
) -> bool:
    """Store what the worker learnt when it fetched and probed the input (queued or running)."""
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=ACTIVE_STATUSES,
        values={
            "input_sha256": sha256,
            "input_format": format,
            "input_sample_rate": sample_rate,
            "input_channels": channels,
            "input_duration_seconds": duration_seconds,
        },
    )
    return job is not None


def mark_succeeded(
    session: Session, *, job_id: uuid.UUID, attempt: int | None = None
) -> Job | None:
    """running → succeeded (progress 1); None if it was cancelled, finished or reclaimed."""
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={"status": JobStatus.SUCCEEDED, "progress": 1.0, "finished_at": utcnow()},
    )
    if job is not None:
        _log(session, job, EventKind.SUCCEEDED)
    return job


def mark_failed(
    session: Session,
    *,
    job_id: uuid.UUID,
    code: str,
    message: str,
    attempt: int | None = None,
) -> Job | None:
    """running → failed with an error `code` (`MssError.code`) and message; None if not running."""
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={
            "status": JobStatus.FAILED,
            "error_code": code,
            "error_message": message,
            "finished_at": utcnow(),
        },
    )
    if job is not None:
        _log(session, job, EventKind.FAILED, message=message, detail={"code": code})
    return job


def cancel_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """queued or running → cancelled; None when the job is already finished (or unknown).

    A running worker is not interrupted here: its later writes simply stop applying.
    """
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=ACTIVE_STATUSES,
        values={"status": JobStatus.CANCELLED, "finished_at": utcnow()},
    )
    if job is not None:
        _log(session, job, EventKind.CANCELLED)
    return job


def retry_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """failed or cancelled → queued, error cleared, attempts kept; None otherwise.

    The caller enqueues the job id again after committing.
    """
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=RETRYABLE_STATUSES,
        values={
            "status": JobStatus.QUEUED,
            "error_code": None,
            "error_message": None,
            "progress": 0.0,
            "stage": None,
            "worker": None,
            "started_at": None,
            "finished_at": None,
        },
    )
    if job is not None:
        _log(session, job, EventKind.RETRIED)
    return job


def delete_job(session: Session, *, job_id: uuid.UUID) -> bool:
    """Delete the job with its outputs and events (database cascade); False if unknown.

    Stored objects are not touched: list the outputs first to delete them from storage.
    """
    deleted = session.execute(delete(Job).where(Job.id == job_id).returning(Job.id)).first()
    return deleted is not None
