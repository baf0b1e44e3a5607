"""Edge: the two primitives every job state change is built from — the guarded UPDATE and the
history row.

`transition` is one `UPDATE … WHERE id = :id AND status IN (…) [AND attempts = :attempt]
RETURNING …`, so the database decides atomically whether a change applies; `log_event` appends
the `job_events` row an applied change leaves behind. They live apart from the data functions
(`jobs.py`, `recovery.py`, `results.py`) so that each of those can use them without importing
the others. Neither commits: the caller's `transaction()` is the unit of work.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from mss_jobs.db.models import Job, JobEvent, utcnow
from mss_jobs.domain.lifecycle import EventKind, JobStatus

__all__ = ["log_event", "transition"]


def transition(
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
