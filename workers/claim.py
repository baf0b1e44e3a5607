"""Edge: the claim — how a delivery of `mss_jobs.separate` takes its job row, and the plain values
the rest of the run carries from it.

A first delivery claims a `queued` job only. A redelivered message means the worker running it
died; a Celery retry means our own previous attempt met a transient error: either may find the
row still `running` and take it again (`Reclaim`). Before a redelivery re-claims the job, the
crash cap fails it with `worker.lost` once it has killed `MSS_MAX_WORKER_DEATHS` workers (a
poison pill must not take the fleet down in a loop). The claim's `attempt` fences every later
write: a worker that lost its claim stops mattering (`JobLostError`).

Also here, because every step of the run takes them: the task's `Outcome` and the typed view of
a bound Celery task (`BoundTask`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from celery import Celery  # type: ignore[import-untyped]

from mss_jobs.db.job_transitions import Reclaim, claim_job, record_output
from mss_jobs.db.recovery import give_up_after_worker_deaths
from mss_jobs.db.schema import Job
from mss_jobs.db.session import transaction
from workers.context import WorkerContext

if TYPE_CHECKING:
    from mss_jobs.db.results import ReusableOutput
    from mss_jobs.runner import StemFile
    from mss_jobs.storage import StoredObject

__all__ = [
    "WORKER_LOST_CODE",
    "BoundTask",
    "Claim",
    "JobLostError",
    "Outcome",
    "claim_for_delivery",
    "reclaim_reason",
    "record_stem",
    "worker_name",
]

log = logging.getLogger(__name__)

WORKER_LOST_CODE: Final = "worker.lost"
"""The job's worker went away without reporting: it died too often (the crash cap), or it was
killed by the hard time limit or lost with its message (the reaper)."""

Outcome = str
"""What the task returns: "succeeded", "failed", "cancelled", "skipped" or "deferred"."""


class _Request(Protocol):
    id: str | None
    retries: int
    hostname: str | None
    delivery_info: Mapping[str, Any] | None


class BoundTask(Protocol):
    """The parts of a bound Celery task the worker uses (Celery ships no type hints)."""

    request: _Request
    max_retries: int | None
    app: Celery

    def update_state(self, *, state: str, meta: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """The claimed row as plain values, usable after its session closed."""

    id: uuid.UUID
    attempt: int
    model: str
    params: dict[str, Any]
    input_uri: str
    priority: int

    @classmethod
    def of(cls, job: Job) -> Claim:
        return cls(job.id, job.attempts, job.model, dict(job.params), job.input_uri, job.priority)


class JobLostError(Exception):
    """The job stopped being ours (cancelled, or reclaimed after a redelivery).

    Control flow inside the worker, not part of the error tree (`mss_jobs.errors`): it has no
    code and is never stored or shown; `workers.tasks` turns it into the "cancelled" outcome.
    Deliberately not an `MssError`, so no handler of the tree can take it for a failure.
    """


def claim_for_delivery(
    task: BoundTask, job_id: uuid.UUID, context: WorkerContext
) -> Claim | Outcome:
    """Claim the job for this delivery, or say why not ("skipped", or "failed" by the cap)."""
    reclaim = reclaim_reason(task)
    with transaction(context.sessions) as session:
        if reclaim is Reclaim.REDELIVERY:
            lost = give_up_after_worker_deaths(
                session,
                job_id=job_id,
                max_deaths=context.settings.max_worker_deaths,
                code=WORKER_LOST_CODE,
            )
            if lost is not None:
                log.error("job %s failed: %s: %s", job_id, WORKER_LOST_CODE, lost.error_message)
                return "failed"
        row = claim_job(session, job_id=job_id, worker=worker_name(task), reclaim=reclaim)
        claim = Claim.of(row) if row is not None else None
    if claim is None:
        log.info("job %s is not claimable (finished, cancelled or unknown); skipped", job_id)
        return "skipped"
    return claim


def reclaim_reason(task: BoundTask) -> Reclaim | None:
    """A redelivered message means the worker running it died; a retry means our own previous
    attempt met a transient error. Either may find the row still `running` from before."""
    delivery = task.request.delivery_info or {}
    if delivery.get("redelivered"):
        return Reclaim.REDELIVERY
    if task.request.retries > 0:
        return Reclaim.RETRY
    return None


def worker_name(task: BoundTask) -> str:
    """`<Celery hostname>:<pid>`: which process of which worker holds the claim."""
    return f"{task.request.hostname or 'worker'}:{os.getpid()}"


def record_stem(
    context: WorkerContext, claim: Claim, audio: StemFile | ReusableOutput, stored: StoredObject
) -> None:
    """Record `stored` as the claimed job's output `audio.stem` (a separated stem or a copy of a
    twin's); raises `JobLostError` once the job is no longer ours at the claim's attempt."""
    with transaction(context.sessions) as session:
        row = record_output(
            session,
            job_id=claim.id,
            stem=audio.stem,
            uri=stored.uri,
            size_bytes=stored.bytes,
            sha256=stored.sha256,
            format=audio.format,
            sample_rate=audio.sample_rate,
            channels=audio.channels,
            duration_seconds=audio.duration_seconds,
            attempt=claim.attempt,
        )
    if row is None:
        raise JobLostError
