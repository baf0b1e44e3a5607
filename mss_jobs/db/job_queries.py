"""Edge: read-only queries over jobs — one job, a filtered page of jobs, a job's history and
outputs, dedup, and the events since a job last finished.

Listing is keyset-paginated on (created_at, id), newest first, with an opaque cursor: a page costs
an index range scan however deep it is, and jobs created meanwhile never shift or repeat the pages
after a cursor. `since_finished` counts a kind of event in the current run of a job (worker deaths
for `recovery.py`, deferrals for `results.py`); it is a subquery, so a guarded UPDATE can re-check
it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ScalarSelect, func, select, tuple_
from sqlalchemy.orm import Session

from mss_jobs.db.schema import Job, JobEvent, JobOutput
from mss_jobs.domain.lifecycle import EventKind, JobStatus
from mss_jobs.errors import ConfigError

__all__ = [
    "MAX_PAGE_SIZE",
    "TERMINAL_EVENTS",
    "count_since_finished",
    "decode_cursor",
    "encode_cursor",
    "find_duplicate",
    "get_job",
    "list_events",
    "list_jobs",
    "list_outputs",
    "since_finished",
]

MAX_PAGE_SIZE = 1000


def get_job(session: Session, *, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id)


def list_events(session: Session, *, job_id: uuid.UUID) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    return list(session.scalars(query))


def list_outputs(session: Session, *, job_id: uuid.UUID) -> list[JobOutput]:
    query = select(JobOutput).where(JobOutput.job_id == job_id).order_by(JobOutput.stem)
    return list(session.scalars(query))


TERMINAL_EVENTS = (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED)
"""The events that end a run of the job: events before the latest one belong to earlier runs."""


def since_finished(job_id: uuid.UUID, kind: EventKind) -> ScalarSelect[int]:
    """How many `kind` events the job has after its last terminal event (this run's), as a
    scalar subquery."""
    last_end = (
        select(func.coalesce(func.max(JobEvent.id), 0))
        .where(JobEvent.job_id == job_id, JobEvent.kind.in_(TERMINAL_EVENTS))
        .scalar_subquery()
    )
    return (
        select(func.count())
        .select_from(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.kind == kind, JobEvent.id > last_end)
        .scalar_subquery()
    )


def count_since_finished(session: Session, *, job_id: uuid.UUID, kind: EventKind) -> int:
    """`since_finished`, counted now."""
    return int(session.execute(select(since_finished(job_id, kind))).scalar_one())


def find_duplicate(
    session: Session,
    *,
    input_sha256: str,
    model: str,
    params_hash: str,
    statuses: Sequence[JobStatus] = (JobStatus.SUCCEEDED,),
) -> Job | None:
    """The newest job with the same input content, model and params (the dedup index)."""
    query = (
        select(Job)
        .where(
            Job.input_sha256 == input_sha256,
            Job.model == model,
            Job.params_hash == params_hash,
            Job.status.in_(statuses),
        )
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    model: str | None = None,
    batch_id: uuid.UUID | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """One page of jobs, newest first, and the cursor of the next page (None on the last).

    Keyset pagination on (created_at, id): a page costs an index range scan however deep it is,
    and jobs created meanwhile never shift or repeat the pages after the cursor.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"{limit=} must be in [1, {MAX_PAGE_SIZE}]")
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if model is not None:
        query = query.where(Job.model == model)
    if batch_id is not None:
        query = query.where(Job.batch_id == batch_id)
    if cursor is not None:
        after_created_at, after_id = decode_cursor(cursor)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(after_created_at, after_id))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    jobs = list(session.scalars(query))
    if len(jobs) <= limit:
        return jobs, None
    page = jobs[:limit]
    return page, encode_cursor(page[-1].created_at, page[-1].id)


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    """An opaque URL-safe token for the position just after (created_at, id)."""
    raw = f"{created_at.isoformat()}|{job_id.hex}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of `encode_cursor`; a malformed token raises `ConfigError` (a client error)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        created_at_text, id_text = raw.split("|")
        created_at = datetime.fromisoformat(created_at_text)
        job_id = uuid.UUID(hex=id_text)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"invalid page cursor {cursor!r}") from exc
    if created_at.utcoffset() is None:
        raise ConfigError(f"invalid page cursor {cursor!r}")
    return created_at, job_id
