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
passes it back as `attempt=` to `update_progress`, `record_input`, `record_output`,
`mark_succeeded`, `mark_failed` and `requeue_for_retry` is ignored once a redelivery has claimed
the job again (it became a zombie).

Recovery: a worker that dies leaves its job `running`. If the broker redelivers the task, the
next worker re-claims it (`Reclaim.REDELIVERY`, a `redelivered` event per death) until
`give_up_after_worker_deaths` decides it has killed enough workers; if nothing redelivers it
(the hard time limit acknowledges the message it kills), `reap_stale_jobs` fails it once nothing
has written to it for longer than any live attempt could stay silent. A transient error puts the
job back to `queued` (`requeue_for_retry`) while Celery's retry waits, so `running` always means
a worker is on it.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, case, delete, func, select, update
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
    "Reclaim",
    "cancel_job",
    "claim_job",
    "create_job",
    "decode_cursor",
    "delete_job",
    "encode_cursor",
    "find_duplicate",
    "get_job",
    "give_up_after_worker_deaths",
    "hand_back_stale_batch_jobs",
    "list_events",
    "list_jobs",
    "list_outputs",
    "mark_failed",
    "mark_succeeded",
    "params_hash",
    "reap_stale_jobs",
    "record_input",
    "record_output",
    "requeue_for_retry",
    "retry_job",
    "update_progress",
    "worker_deaths",
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
    force: bool = False,
) -> Job:
    """Insert a queued job, or return the job already created under `idempotency_key`.

    `force` makes the worker run the model even when a finished job with the same input
    content, model and params could lend its outputs (see `mss_jobs.db.results`); it is not
    part of `params` (it does not change the result) nor of the idempotency check.

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
        force=force,
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


class Reclaim(StrEnum):
    """Why a claim may also take a job that is still `running` (see `claim_job`)."""

    REDELIVERY = "redelivery"
    """The broker redelivered the task: the worker running it died. Logged as `redelivered`,
    one event per death (`worker_deaths` counts them)."""
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
    job = _transition(session, job_id=job_id, from_statuses=[JobStatus.QUEUED], values=values)
    kind, message = EventKind.CLAIMED, None
    if job is None and reclaim is not None:
        job = _transition(session, job_id=job_id, from_statuses=[JobStatus.RUNNING], values=values)
        if reclaim is Reclaim.REDELIVERY:
            kind = EventKind.REDELIVERED
        else:
            message = "re-claimed by a retry of the attempt before"
    if job is not None:
        _log(session, job, kind, message=message)
    return job


_TERMINAL_EVENTS = (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED)
"""The events that end a run of the job: worker deaths before the latest one do not count."""


def _deaths_since_finished(job_id: uuid.UUID) -> ScalarSelect[int]:
    """Redelivered events after the job's last terminal event: its worker deaths this run."""
    last_end = (
        select(func.coalesce(func.max(JobEvent.id), 0))
        .where(JobEvent.job_id == job_id, JobEvent.kind.in_(_TERMINAL_EVENTS))
        .scalar_subquery()
    )
    return (
        select(func.count())
        .select_from(JobEvent)
        .where(
            JobEvent.job_id == job_id,
            JobEvent.kind == EventKind.REDELIVERED,
            JobEvent.id > last_end,
        )
        .scalar_subquery()
    )


def worker_deaths(session: Session, *, job_id: uuid.UUID) -> int:
    """How many workers died running the job since it last finished (its `redelivered` events
    after the latest succeeded/failed/cancelled one), not counting a death not yet redelivered."""
    return int(session.execute(select(_deaths_since_finished(job_id))).scalar_one())


def give_up_after_worker_deaths(
    session: Session, *, job_id: uuid.UUID, max_deaths: int, code: str
) -> Job | None:
    """running → failed with `code` when a redelivery finds its `max_deaths`-th dead worker.

    Call it for a redelivered task before `claim_job(reclaim=Reclaim.REDELIVERY)`: the death
    that caused this redelivery is not logged yet, so the job has died `worker_deaths + 1`
    times. Returns the failed job, or None when it may run again (or is not running: a task
    redelivered before any worker claimed it did not kill one). The count is re-checked inside
    the guarded UPDATE, so a concurrent claim cannot slip between the count and the write.
    """
    if max_deaths < 1:
        raise ValueError(f"{max_deaths=} must be at least 1")
    deaths = worker_deaths(session, job_id=job_id) + 1
    if deaths < max_deaths:
        return None
    message = (
        f"the worker died {deaths} times while running this job (the limit is {max_deaths}); "
        "not run again — the input may need more memory than a worker has"
    )
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        values={
            "status": JobStatus.FAILED,
            "error_code": code,
            "error_message": message,
            "finished_at": utcnow(),
        },
        also=[_deaths_since_finished(job_id) >= max_deaths - 1],
    )
    if job is not None:
        _log(
            session, job, EventKind.FAILED, message=message, detail={"code": code, "deaths": deaths}
        )
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
    attempt: int | None = None,
) -> bool:
    """Store what the worker learnt when it fetched and probed the input; False if the job is
    not active (or, with `attempt`, not running at that attempt: the write is a zombie's)."""
    job = _transition(
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


def requeue_for_retry(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    code: str,
    message: str,
    retry: int,
    max_retries: int | None,
) -> Job | None:
    """running → queued while Celery's retry `retry` of `max_retries` waits; None if not ours.

    The attempt hit a transient error (`code`, `message`); progress is reset, attempts kept (the
    retry's claim adds one). Logged as a `retried` event whose detail names the error, so the
    history shows why the job ran again.
    """
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={"status": JobStatus.QUEUED, "progress": 0.0, "stage": None},
    )
    if job is not None:
        detail = {"code": code, "retry": retry, "max_retries": max_retries}
        _log(session, job, EventKind.RETRIED, message=message, detail=detail)
    return job


def reap_stale_jobs(
    session: Session, *, stale_before: datetime, code: str, message: str
) -> list[uuid.UUID]:
    """running → failed with `code` for every job nothing wrote to since `stale_before`.

    Every write of a running attempt (claim, progress, input, outcome) sets `updated_at`, so the
    caller picks `stale_before` so that no live attempt can be that silent. One guarded UPDATE:
    reapers running at once (any number of workers) fail each job once — on PostgreSQL the
    later UPDATE re-checks `status` after the earlier commits; SQLite serializes writers. Each
    reaped job gets a `failed` event. Returns the reaped ids.
    """
    if stale_before.utcoffset() is None:
        raise ValueError(f"naive {stale_before=}: pass an aware (UTC) datetime")
    now = utcnow()
    statement = (
        update(Job)
        .where(Job.status == JobStatus.RUNNING, Job.updated_at < stale_before)
        .values(
            status=JobStatus.FAILED,
            error_code=code,
            error_message=message,
            finished_at=now,
            updated_at=now,
        )
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    reaped = list(session.scalars(statement))
    for job in reaped:
        _log(session, job, EventKind.FAILED, message=message, detail={"code": code})
    return [job.id for job in reaped]


def hand_back_stale_batch_jobs(
    session: Session, *, stale_before: datetime, max_deaths: int
) -> list[uuid.UUID]:
    """running → pending for every *batch* job nothing wrote to since `stale_before`, so its
    batch's dispatcher runs it again; returns their ids.

    Such a job's worker died and no redelivery came (the broker lost the unacknowledged message,
    e.g. Redis restarted without it): failing it would leave a catalog with holes nobody asked
    for. It counts as a worker death (a `redelivered` event, so `MSS_MAX_WORKER_DEATHS` still
    bounds a track that kills workers); a job at its last allowed death is left running for
    `reap_stale_jobs` to fail. Single jobs are not handed back (nothing would publish them):
    they fail, and `POST /v1/jobs/{id}/retry` runs them again. Call it before
    `reap_stale_jobs`, with the same cutoff.
    """
    if stale_before.utcoffset() is None:
        raise ValueError(f"naive {stale_before=}: pass an aware (UTC) datetime")
    if max_deaths < 1:
        raise ValueError(f"{max_deaths=} must be at least 1")
    stale = session.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.RUNNING,
            Job.batch_id.is_not(None),
            Job.updated_at < stale_before,
        )
        .with_for_update(skip_locked=True)
    ).all()
    handed_back: list[Job] = []
    for job_id in stale:
        if worker_deaths(session, job_id=job_id) + 1 >= max_deaths:
            continue  # its last allowed death: reap_stale_jobs fails it
        job = _transition(
            session,
            job_id=job_id,
            from_statuses=(JobStatus.RUNNING,),
            also=(Job.updated_at < stale_before,),
            values={
                "status": JobStatus.PENDING,
                "enqueued_at": None,
                "worker": None,
                "started_at": None,
                "progress": 0.0,
                "stage": None,
            },
        )
        if job is None:
            continue
        handed_back.append(job)
        _log(
            session,
            job,
            EventKind.REDELIVERED,
            message="the worker was lost and no redelivery came; handed back to the batch",
        )
    return [job.id for job in handed_back]


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

    The caller enqueues the job id again after committing — unless it belongs to a batch: then
    it goes back to `pending` and the batch's dispatcher publishes it, so the batch never has
    more than `max_in_flight` jobs in the broker.
    """
    job = _transition(
        session,
        job_id=job_id,
        from_statuses=RETRYABLE_STATUSES,
        values={
            "status": case(
                (Job.batch_id.is_(None), JobStatus.QUEUED.value), else_=JobStatus.PENDING.value
            ),
            "error_code": None,
            "error_message": None,
            "progress": 0.0,
            "stage": None,
            "worker": None,
            "started_at": None,
            "finished_at": None,
            "enqueued_at": None,
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
