"""Edge: the data functions that bring a job back from a worker that failed it — counting worker
deaths, the retry requeue, the reaper and the hand-back of stale batch jobs.

Recovery: a worker that dies leaves its job `running`. If the broker redelivers the task, the
next worker re-claims it (`Reclaim.REDELIVERY` in `job_transitions.py`, a `redelivered` event per
death)
until `give_up_after_worker_deaths` decides it has killed enough workers; if nothing redelivers it
(the hard time limit acknowledges the message it kills), `reap_stale_jobs` fails it once nothing
has written to it for longer than any live attempt could stay silent. A transient error puts the
job back to `queued` (`requeue_for_retry`) while Celery's retry waits, so `running` always means
a worker is on it.

Same rules as `job_transitions.py`: each change is one guarded UPDATE
(`job_transitions.transition`) plus a `job_events` row; functions take an open session and never
commit.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mss_jobs.db.job_queries import count_since_finished, since_finished
from mss_jobs.db.job_transitions import failed_values, log_event, transition
from mss_jobs.db.schema import Job, utcnow
from mss_jobs.domain.lifecycle import EventKind, JobStatus

__all__ = [
    "give_up_after_worker_deaths",
    "hand_back_stale_batch_jobs",
    "reap_stale_jobs",
    "requeue_for_retry",
    "worker_deaths",
]


def worker_deaths(session: Session, *, job_id: uuid.UUID) -> int:
    """How many workers died running the job since it last finished (its `redelivered` events
    after the latest succeeded/failed/cancelled one), not counting a death not yet redelivered."""
    return count_since_finished(session, job_id=job_id, kind=EventKind.REDELIVERED)


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
    _check_max_deaths(max_deaths)
    deaths = worker_deaths(session, job_id=job_id) + 1
    if deaths < max_deaths:
        return None
    message = (
        f"the worker died {deaths} times while running this job (the limit is {max_deaths}); "
        "not run again — the input may need more memory than a worker has"
    )
    return transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        values=failed_values(code, message),
        also=[since_finished(job_id, EventKind.REDELIVERED) >= max_deaths - 1],
        event=EventKind.FAILED,
        message=message,
        detail={"code": code, "deaths": deaths},
    )


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
    return transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={"status": JobStatus.QUEUED, "progress": 0.0, "stage": None},
        event=EventKind.RETRIED,
        message=message,
        detail={"code": code, "retry": retry, "max_retries": max_retries},
    )


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
    _check_aware(stale_before)
    now = utcnow()
    statement = (
        update(Job)
        .where(Job.status == JobStatus.RUNNING, Job.updated_at < stale_before)
        .values(**failed_values(code, message, at=now), updated_at=now)
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    reaped = list(session.scalars(statement))
    for job in reaped:
        log_event(session, job, EventKind.FAILED, message=message, detail={"code": code})
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
    _check_aware(stale_before)
    _check_max_deaths(max_deaths)
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
        job = transition(
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
            event=EventKind.REDELIVERED,
            message="the worker was lost and no redelivery came; handed back to the batch",
        )
        if job is not None:
            handed_back.append(job)
    return [job.id for job in handed_back]


def _check_aware(stale_before: datetime) -> None:
    if stale_before.utcoffset() is None:
        raise ValueError(f"naive {stale_before=}: pass an aware (UTC) datetime")


def _check_max_deaths(max_deaths: int) -> None:
    if max_deaths < 1:
        raise ValueError(f"{max_deaths=} must be at least 1")
