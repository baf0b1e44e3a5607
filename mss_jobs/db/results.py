"""Edge: the result cache — a job whose input content, model and params equal a finished job's
reuses that job's outputs instead of running the model again.

The key is (input sha256, model, params hash), indexed by `ix_jobs_dedup`. The worker learns the
sha256 once it has fetched the input and calls `record_input_and_decide`, one transaction:

    lock the key ─▶ record the input ─▶ force ──────────────────────────▶ Separate
                                     ─▶ a succeeded job with the key ────▶ Reuse(source, outputs)
                                     ─▶ another job with the key runs ───▶ Deferred (now queued)
                                     ─▶ otherwise ───────────────────────▶ Separate

Why one lock per key around record-and-decide: decisions about a key happen one at a time, and a
job decides to separate only when no other job with the key is running. So at most one job
separates a key at a time, and every later duplicate defers to it. A deferring job leaves
`running` in the same transaction, so of N duplicates fetched at once the first to decide may
defer to a twin that has not decided yet, but that twin then finds nobody running and separates:
somebody always proceeds, nobody waits for a job that itself waits, and the wait ends when the
twin does — it succeeded (the deferred job reuses its outputs), or it failed or was cancelled
(the deferred job separates itself). Ordering twins by (started_at, id) without a lock would let
two separate: the later-ordered job decides before the earlier one's sha256 is visible, then the
earlier one sees the later and, being earlier, separates too.

The lock is `pg_advisory_xact_lock` on a 64-bit hash of the key (released at commit; unrelated
keys collide with negligible odds, and a collision only serializes two decisions); SQLite opens
every transaction with `BEGIN IMMEDIATE`, which serializes all of them.

A `force` job (its own flag, or its batch's) does not look: it records its input and separates.
Its sha256 is visible while it runs, so duplicates arriving meanwhile defer to it and then reuse
its fresh result. A deferral is attempt-fenced like every worker write, is neither a retry nor a
worker death, and is logged as a `deferred` event; `mark_reused` finishes a job that copied a
source's outputs (each recorded with `record_output`) with `reused_from` and a `reused` event.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import case, exists, literal, null, select, text
from sqlalchemy.orm import Session, aliased

from mss_jobs.db.job_queries import count_since_finished, list_outputs
from mss_jobs.db.job_transitions import log_event, record_input, transition
from mss_jobs.db.schema import Job, JobOutput, UtcDateTime, utcnow
from mss_jobs.domain.lifecycle import EventKind, JobStatus

__all__ = [
    "Decision",
    "Deferred",
    "ReusableOutput",
    "Reuse",
    "Separate",
    "defer_job",
    "find_reusable",
    "find_running_twin",
    "lock_result_key",
    "mark_reused",
    "record_input_and_decide",
]


@dataclass(frozen=True, slots=True)
class ReusableOutput:
    """One output of the source job, as plain values (usable after the session closed)."""

    stem: str
    uri: str
    size_bytes: int
    sha256: str
    format: str
    sample_rate: int
    channels: int
    duration_seconds: float

    @classmethod
    def of(cls, row: JobOutput) -> ReusableOutput:
        return cls(
            stem=row.stem,
            uri=row.uri,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            format=row.format,
            sample_rate=row.sample_rate,
            channels=row.channels,
            duration_seconds=row.duration_seconds,
        )


@dataclass(frozen=True, slots=True)
class Reuse:
    """Copy these outputs of the succeeded job `source`; no model runs."""

    source: uuid.UUID
    outputs: tuple[ReusableOutput, ...]


@dataclass(frozen=True, slots=True)
class Deferred:
    """The job is `queued` again because `twin` is running the same work; publish it again."""

    twin: uuid.UUID
    deferrals: int
    """Deferrals since the job last finished, this one included (a backoff can grow with it)."""


@dataclass(frozen=True, slots=True)
class Separate:
    """Run the model: nothing to reuse, nobody to wait for, or the job is `force`."""


Decision = Reuse | Deferred | Separate


def lock_result_key(session: Session, *, input_sha256: str, model: str, params_hash: str) -> None:
    """Serialize, until the transaction ends, every decision about this key (see the module
    docstring); on SQLite the transaction already holds the one write lock."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        digest = hashlib.sha256(f"{input_sha256}|{model}|{params_hash}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect != "sqlite":
        raise NotImplementedError(f"no result-key lock for the {dialect!r} dialect")


def find_reusable(
    session: Session,
    *,
    input_sha256: str,
    model: str,
    params_hash: str,
    exclude: uuid.UUID | None = None,
) -> Reuse | None:
    """A succeeded job with this key that has outputs (not `exclude`), with them.

    The newest job whose model ran is preferred to the copies made from it, so `reused_from`
    names the run that computed the result; a copy serves once no such job is left.
    """
    has_outputs = exists().where(JobOutput.job_id == Job.id)
    query = (
        select(Job.id)
        .where(
            Job.input_sha256 == input_sha256,
            Job.model == model,
            Job.params_hash == params_hash,
            Job.status == JobStatus.SUCCEEDED,
            has_outputs,
        )
        .order_by(Job.reused_from.is_(None).desc(), Job.finished_at.desc(), Job.id.desc())
        .limit(1)
    )
    if exclude is not None:
        query = query.where(Job.id != exclude)
    source = session.scalars(query).first()
    if source is None:
        return None
    outputs = tuple(ReusableOutput.of(row) for row in list_outputs(session, job_id=source))
    return Reuse(source=source, outputs=outputs)


def find_running_twin(
    session: Session, *, job_id: uuid.UUID, input_sha256: str, model: str, params_hash: str
) -> uuid.UUID | None:
    """Another running job with this key (the one that started first), or None."""
    query = (
        select(Job.id)
        .where(
            Job.input_sha256 == input_sha256,
            Job.model == model,
            Job.params_hash == params_hash,
            Job.status == JobStatus.RUNNING,
            Job.id != job_id,
        )
        .order_by(Job.started_at, Job.id)
        .limit(1)
    )
    return session.scalars(query).first()


def defer_job(
    session: Session, *, job_id: uuid.UUID, attempt: int, twin: uuid.UUID
) -> Deferred | None:
    """running → queued because `twin` runs the same work; None if the job is not ours.

    Progress is reset and attempts kept (the next claim adds one); a batch job's `enqueued_at`
    is stamped, since the caller publishes it again now (the dispatcher must not think its
    message lost). Logged as a `deferred` event naming the twin — not `retried`, and not a
    worker death.
    """
    now = utcnow()
    job = transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={
            "status": JobStatus.QUEUED,
            "progress": 0.0,
            "stage": None,
            "enqueued_at": case(
                (Job.batch_id.is_(None), null()), else_=literal(now, UtcDateTime())
            ),
        },
    )
    if job is None:
        return None
    deferrals = count_since_finished(session, job_id=job_id, kind=EventKind.DEFERRED) + 1
    message = f"job {twin} with the same input, model and params is running; waiting for it"
    log_event(
        session,
        job,
        EventKind.DEFERRED,
        message=message,
        detail={"twin": str(twin), "deferrals": deferrals},
    )
    return Deferred(twin=twin, deferrals=deferrals)


def mark_reused(
    session: Session, *, job_id: uuid.UUID, attempt: int, source: uuid.UUID
) -> Job | None:
    """running → succeeded with `reused_from = source`; None if the job is not ours.

    The caller has copied the source's outputs under this job's own keys and recorded them.
    `reused_from` stays NULL if the source was deleted meanwhile (the copies are this job's own
    objects, so nothing is lost; the `reused` event still names it). Logged as `reused` (detail:
    source) then `succeeded`.
    """
    source_row = aliased(Job)  # not correlated with the row being updated
    still_there = select(source_row.id).where(source_row.id == source).scalar_subquery()
    job = transition(
        session,
        job_id=job_id,
        from_statuses=[JobStatus.RUNNING],
        attempt=attempt,
        values={
            "status": JobStatus.SUCCEEDED,
            "progress": 1.0,
            "finished_at": utcnow(),
            "reused_from": still_there,
        },
        event=EventKind.REUSED,
        message=f"reused the outputs of job {source}; the model did not run",
        detail={"source": str(source)},
    )
    if job is not None:
        log_event(session, job, EventKind.SUCCEEDED)
    return job


def record_input_and_decide(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    sha256: str,
    format: str,
    sample_rate: int,
    channels: int,
    duration_seconds: float,
    may_defer: bool = True,
) -> Decision | None:
    """`record_input`, then decide how the job gets its result; None if the job is not ours.

    Locks the key first (see the module docstring), so call it in a transaction of its own and
    commit at once. A `Deferred` job is already `queued` when this returns: publish it again
    after the commit. `may_defer=False` never defers (a worker that could not publish a
    deferred job runs it itself).
    """
    row = session.execute(
        select(Job.model, Job.params_hash, Job.force).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        return None
    model, params_hash, force = row
    key = {"input_sha256": sha256, "model": model, "params_hash": params_hash}
    if not force:
        lock_result_key(session, **key)
    recorded = record_input(
        session,
        job_id=job_id,
        sha256=sha256,
        format=format,
        sample_rate=sample_rate,
        channels=channels,
        duration_seconds=duration_seconds,
        attempt=attempt,
    )
    if not recorded:
        return None
    if force:
        return Separate()
    reuse = find_reusable(session, exclude=job_id, **key)
    if reuse is not None:
        return reuse
    twin = find_running_twin(session, job_id=job_id, **key) if may_defer else None
    if twin is None:
        return Separate()
    return defer_job(session, job_id=job_id, attempt=attempt, twin=twin)
