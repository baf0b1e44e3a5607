"""Edge: read-only queries over batches — counts, progress and pace, a page of jobs, the report.

Everything here reads through the batch's indexes: counts and the in-flight number scan
`(batch_id, status, batch_line)` only, the pace `(batch_id, finished_at)`, and listing and the
report walk lines in keyset pages, so their cost does not grow with how deep a page is and the
report streams any batch in flat memory.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mss_jobs.db.schema import Batch, BatchRejection, Job, JobOutput, utcnow
from mss_jobs.domain.lifecycle import IN_FLIGHT_STATUSES, JobStatus

__all__ = [
    "MAX_PAGE_SIZE",
    "REJECTED",
    "REPORT_CHUNK_SIZE",
    "BatchProgress",
    "ReportRow",
    "batch_progress",
    "count_by_status",
    "count_in_flight",
    "get_batch",
    "iter_report",
    "job_line",
    "list_batch_jobs",
]

MAX_PAGE_SIZE = 1000
REPORT_CHUNK_SIZE = 1000
REJECTED: Literal["rejected"] = "rejected"
"""The status a report gives a manifest row that never became a job."""


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """A batch's counts and pace at `at`.

    `progress` counts running jobs by their own progress; `throughput` is jobs finished
    (succeeded or failed) per minute over the recent window; `eta` is None while nothing has
    finished in that window.
    """

    at: datetime
    counts: Mapping[JobStatus, int]
    total: int
    rejected: int
    finished: int
    remaining: int
    progress: float
    throughput_per_minute: float
    eta: timedelta | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One line of a batch's report: a job (with its stems) or a rejected manifest row."""

    line: int
    input: str
    status: JobStatus | Literal["rejected"]
    job_id: uuid.UUID | None = None
    ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    """stem → URI; taken from the job whose result was reused when the job has none itself."""


def get_batch(session: Session, *, batch_id: uuid.UUID) -> Batch | None:
    return session.get(Batch, batch_id, populate_existing=True)


def count_in_flight(session: Session, *, batch_id: uuid.UUID) -> int:
    """The batch's jobs that are queued or running (what `max_in_flight` bounds)."""
    query = select(func.count()).where(
        Job.batch_id == batch_id, Job.status.in_(sorted(IN_FLIGHT_STATUSES))
    )
    return session.scalar(query) or 0


def count_by_status(session: Session, *, batch_id: uuid.UUID) -> dict[JobStatus, int]:
    """How many of the batch's jobs are in each status (every status present, maybe 0)."""
    counts = dict.fromkeys(JobStatus, 0)
    query = select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    for status, count in session.execute(query):
        counts[status] = count
    return counts


def batch_progress(
    session: Session,
    *,
    batch_id: uuid.UUID,
    window: timedelta = timedelta(minutes=10),
    now: datetime | None = None,
) -> BatchProgress | None:
    """Counts, progress, throughput over the last `window` (or since creation, if shorter) and
    the ETA at that pace; None for an unknown batch."""
    if window <= timedelta(0):
        raise ValueError(f"{window=} must be positive")
    batch = get_batch(session, batch_id=batch_id)
    if batch is None:
        return None
    now = now or utcnow()
    counts = count_by_status(session, batch_id=batch_id)
    total = sum(counts.values())
    finished = sum(counts[status] for status in JobStatus if status.is_terminal)
    remaining = total - finished
    running_progress = session.scalar(
        select(func.coalesce(func.sum(Job.progress), 0.0)).where(
            Job.batch_id == batch_id, Job.status == JobStatus.RUNNING
        )
    )
    since = max(now - window, batch.created_at)
    recent = session.scalar(
        select(func.count()).where(
            Job.batch_id == batch_id,
            Job.finished_at >= since,
            Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED]),
        )
    )
    minutes = (now - since).total_seconds() / 60
    throughput = (recent or 0) / minutes if minutes > 0 else 0.0
    if remaining == 0:
        eta: timedelta | None = timedelta(0)
    elif throughput > 0:
        eta = timedelta(minutes=remaining / throughput)
    else:
        eta = None
    return BatchProgress(
        at=now,
        counts=counts,
        total=total,
        rejected=batch.rejected_rows,
        finished=finished,
        remaining=remaining,
        progress=(finished + float(running_progress or 0.0)) / total if total else 0.0,
        throughput_per_minute=throughput,
        eta=eta,
    )


def list_batch_jobs(
    session: Session,
    *,
    batch_id: uuid.UUID,
    status: JobStatus | None = None,
    limit: int = 50,
    after_line: int | None = None,
) -> tuple[list[Job], int | None]:
    """One page of the batch's jobs in line order, and the `after_line` of the next page (None
    on the last). Keyset pagination on the line: a deep page costs what the first one does."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"{limit=} must be in [1, {MAX_PAGE_SIZE}]")
    query = select(Job).where(Job.batch_id == batch_id)
    if status is not None:
        query = query.where(Job.status == status)
    if after_line is not None:
        query = query.where(Job.batch_line > after_line)
    jobs = list(session.scalars(query.order_by(Job.batch_line).limit(limit + 1)))
    if len(jobs) <= limit:
        return jobs, None
    page = jobs[:limit]
    return page, job_line(page[-1].batch_line)


def iter_report(
    session: Session, *, batch_id: uuid.UUID, chunk_size: int = REPORT_CHUNK_SIZE
) -> Iterator[ReportRow]:
    """Every line of the batch in order — jobs with their stems, rejected rows with their error.

    Streams in keyset pages of `chunk_size`, so memory stays flat for any batch size; the pages
    are read as the caller iterates (inside the caller's transaction).
    """
    return heapq.merge(
        _report_jobs(session, batch_id, chunk_size),
        _report_rejections(session, batch_id, chunk_size),
        key=lambda row: row.line,
    )


def _report_jobs(session: Session, batch_id: uuid.UUID, chunk_size: int) -> Iterator[ReportRow]:
    after = 0
    while True:
        page = session.execute(
            select(
                Job.id,
                Job.batch_line,
                Job.input_uri,
                Job.status,
                Job.client_ref,
                Job.error_code,
                Job.error_message,
                Job.reused_from,
            )
            .where(Job.batch_id == batch_id, Job.batch_line > after)
            .order_by(Job.batch_line)
            .limit(chunk_size)
        ).all()
        if not page:
            return
        wanted = {row.id for row in page} | {row.reused_from for row in page if row.reused_from}
        stems: dict[uuid.UUID, dict[str, str]] = {}
        outputs = session.execute(
            select(JobOutput.job_id, JobOutput.stem, JobOutput.uri)
            .where(JobOutput.job_id.in_(wanted))
            .order_by(JobOutput.job_id, JobOutput.stem)
        )
        for job_id, stem, uri in outputs:
            stems.setdefault(job_id, {})[stem] = uri
        for row in page:
            own = stems.get(row.id)
            yield ReportRow(
                line=job_line(row.batch_line),
                input=row.input_uri,
                status=row.status,
                job_id=row.id,
                ref=row.client_ref,
                error_code=row.error_code,
                error_message=row.error_message,
                outputs=own or (stems.get(row.reused_from, {}) if row.reused_from else {}),
            )
        after = job_line(page[-1].batch_line)


def _report_rejections(
    session: Session, batch_id: uuid.UUID, chunk_size: int
) -> Iterator[ReportRow]:
    after = 0
    while True:
        page = session.execute(
            select(
                BatchRejection.line,
                BatchRejection.input_text,
                BatchRejection.code,
                BatchRejection.message,
            )
            .where(BatchRejection.batch_id == batch_id, BatchRejection.line > after)
            .order_by(BatchRejection.line)
            .limit(chunk_size)
        ).all()
        if not page:
            return
        for row in page:
            yield ReportRow(
                line=row.line,
                input=row.input_text,
                status=REJECTED,
                error_code=row.code,
                error_message=row.message,
            )
        after = page[-1].line


def job_line(line: int | None) -> int:
    """A batch job's `batch_line`, typed as present (it always is)."""
    assert line is not None, "batch jobs always have a line"
    return line
