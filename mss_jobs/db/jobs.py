"""Edge: the data functions the API and the workers share — every job state change is one of
these, and this module is the one import callers need for them.

Here live the claim, progress, the input and outcome writes, cancel, retry and delete. It
re-exports the rest: creating a job (`creation.py`), recovering from a failed worker
(`recovery.py`: worker deaths, the retry requeue, the reaper, the hand-back of stale batch jobs),
the reads (`queries.py`) and the output rows (`outputs.py`).

Each transition is one `UPDATE … WHERE id = :id AND status IN (…) RETURNING …`
(`transitions.py`), so the database decides atomically whether it applies: two workers cannot
both claim a queued job, and a worker finishing late cannot resurrect a job the user cancelled. A
transition returns the updated `Job`, or None when it did not apply (wrong state, unknown id, or
a stale `attempt`). Each applied one appends a `job_events` row. Functions take an open session
and never commit: the caller's `transaction()` decides the unit of work (enqueue only after it
commits). Outputs follow the same rule: `record_output` writes only while the job runs.

Fencing: `claim_job` increments `attempts` and hands the new value to the worker; a worker that
passes it back as `attempt=` to `update_progress`, `record_input`, `record_output`,
`mark_succeeded`, `mark_failed` and `requeue_for_retry` is ignored once a redelivery has claimed
the job again (it became a zombie).
"""

from __future__ import annotations

import math
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import case, delete
from sqlalchemy.orm import Session

from mss_jobs.db.creation import create_job, params_hash
from mss_jobs.db.models import Job, utcnow
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
from mss_jobs.db.recovery import (
    give_up_after_worker_deaths,
    hand_back_stale_batch_jobs,
    reap_stale_jobs,
    requeue_for_retry,
    worker_deaths,
)
from mss_jobs.db.transitions import log_event, transition
from mss_jobs.domain.lifecycle import (
    ACTIVE_STATUSES,
    DEFAULT_PRIORITY,
    RETRYABLE_STATUSES,
    EventKind,
    JobStatus,
)

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

# The names `mss_jobs.db.results` imports from here, from before their move to
# `transitions.py` and `recovery.py`.


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
        )
        if entered is not None:
            log_event(
                session, entered, EventKind.PROGRESS, message=stage, detail={"progress": progress}
            )
            return True
    job = transition(
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


def mark_succeeded(
    session: Session, *, job_id: uuid.UUID, attempt: int | None = None
) -> Job | None:
    """running → succeeded (progress 1); None if it was cancelled, finished or reclaimed."""
    job = transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={"status": JobStatus.SUCCEEDED, "progress": 1.0, "finished_at": utcnow()},
    )
    if job is not None:
        log_event(session, job, EventKind.SUCCEEDED)
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
    job = transition(
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
        log_event(session, job, EventKind.FAILED, message=message, detail={"code": code})
    return job


def cancel_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """queued or running → cancelled; None when the job is already finished (or unknown).

    A running worker is not interrupted here: its later writes simply stop applying.
    """
    job = transition(
        session,
        job_id=job_id,
        from_statuses=ACTIVE_STATUSES,
        values={"status": JobStatus.CANCELLED, "finished_at": utcnow()},
    )
    if job is not None:
        log_event(session, job, EventKind.CANCELLED)
    return job


def retry_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    """failed or cancelled → queued, error cleared, attempts kept; None otherwise.

    The caller enqueues the job id again after committing — unless it belongs to a batch: then
    it goes back to `pending` and the batch's dispatcher publishes it, so the batch never has
    more than `max_in_flight` jobs in the broker.
    """
    job = transition(
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
        log_event(session, job, EventKind.RETRIED)
    return job


def delete_job(session: Session, *, job_id: uuid.UUID) -> bool:
    """Delete the job with its outputs and events (database cascade); False if unknown.

    Stored objects are not touched: list the outputs first to delete them from storage.
    """
    deleted = session.execute(delete(Job).where(Job.id == job_id).returning(Job.id)).first()
    return deleted is not None
