"""The API's use cases over the data functions: create → commit → enqueue, and job views.

Routes stay thin wiring; the ordering rules live here. Enqueue happens only after the row is
committed (a worker must find the row it is told about). When the broker refuses the message, the
job would sit `queued` with no message anyone will deliver, so it is failed at once with code
`broker.unavailable` (claimed by the API and failed in one transaction, using the same guarded
transitions a worker uses) and the request is answered 503; `POST /v1/jobs/{id}/retry` queues it
again once the broker is back. That costs the job one attempt in its counter.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.api.schemas import JobError, JobOut, JobOutput, JobSpec
from mss_jobs.db.job_transitions import claim_job, mark_failed
from mss_jobs.db.schema import Job
from mss_jobs.db.schema import JobOutput as JobOutputRow
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import Lane
from mss_jobs.domain.params import parse_params
from mss_jobs.errors import BrokerUnavailableError, UnknownModelError
from mss_jobs.models.catalog import get_model_info
from mss_jobs.queueing import JobQueue
from mss_jobs.settings import Settings
from mss_jobs.storage import ObjectStorage, S3Uri, output_key, parse_uri, sanitize_filename

__all__ = [
    "API_WORKER",
    "OutputLocation",
    "effective_params",
    "enqueue_or_fail",
    "job_view",
    "output_location",
]

log = logging.getLogger(__name__)

API_WORKER: Final = "api"
"""The `worker` recorded on a job the API failed because the broker was down."""


def effective_params(spec: JobSpec, settings: Settings) -> tuple[str, dict[str, Any]]:
    """The model name and the validated params with defaults filled in (what gets hashed).

    Raises `UnknownModelError` or `ConfigError` (both 422) naming the offending field.
    """
    model = spec.model or settings.default_model
    try:
        get_model_info(model)
    except UnknownModelError as exc:
        raise UnknownModelError(f"model: {exc}") from None
    params = parse_params(spec.params()).model_dump(mode="json")
    return model, params


def enqueue_or_fail(
    sessions: sessionmaker[Session],
    queue: JobQueue | None,
    *,
    job_id: uuid.UUID,
    lane: Lane,
    priority: int,
) -> None:
    """Send a committed job to the broker; if that fails, fail the job and re-raise (503)."""
    try:
        if queue is None:
            raise BrokerUnavailableError(
                f"no broker is configured (MSS_BROKER_URL), so job {job_id} cannot be run"
            )
        queue.enqueue(job_id, lane=lane, priority=priority)
    except BrokerUnavailableError as exc:
        message = f"{exc}; queue it again with POST /v1/jobs/{job_id}/retry"
        with transaction(sessions) as session:
            claimed = claim_job(session, job_id=job_id, worker=API_WORKER)
            if claimed is None:
                # Someone claimed it: the message reached a worker after all.
                log.warning("enqueue of job %s reported failure, yet a worker claimed it", job_id)
                return
            mark_failed(
                session, job_id=job_id, code=exc.code, message=message, attempt=claimed.attempts
            )
        raise BrokerUnavailableError(message) from exc


def job_view(
    job: Job,
    *,
    outputs: list[JobOutputRow] | None = None,
    storage: ObjectStorage | None = None,
    presign_seconds: int = 0,
) -> JobOut:
    """The response body for `job`; with `outputs` and `storage`, stems get presigned URLs."""
    error = (
        JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code is not None
        else None
    )
    views = None
    if outputs is not None and storage is not None:
        views = [
            _output_view(job, row, storage=storage, expires_in=presign_seconds) for row in outputs
        ]
    return JobOut(
        id=job.id,
        status=job.status,
        model=job.model,
        params=dict(job.params),
        input=job.input_uri,
        priority=job.priority,
        progress=job.progress,
        stage=job.stage,
        attempts=job.attempts,
        error=error,
        idempotency_key=job.idempotency_key,
        reused_from=job.reused_from,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        outputs=views,
    )


@dataclass(frozen=True, slots=True)
class OutputLocation:
    """Where a stem lives in storage and the file name a download should get."""

    key: str
    filename: str


def output_location(job: Job, row: JobOutputRow, *, storage: ObjectStorage) -> OutputLocation:
    parsed = parse_uri(row.uri)
    key = (
        parsed.key
        if isinstance(parsed, S3Uri)
        else output_key(storage.prefix, job.id, row.stem, row.format)
    )
    track = PurePosixPath(job.input_uri).stem or "track"
    return OutputLocation(key, sanitize_filename(f"{track}-{row.stem}.{row.format}"))


def _output_view(
    job: Job, row: JobOutputRow, *, storage: ObjectStorage, expires_in: int
) -> JobOutput:
    where = output_location(job, row, storage=storage)
    return JobOutput(
        stem=row.stem,
        format=row.format,
        sample_rate=row.sample_rate,
        channels=row.channels,
        duration_seconds=row.duration_seconds,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        url=storage.presign_get(where.key, expires_in=expires_in, filename=where.filename),
        url_expires_in=expires_in,
        download=f"/v1/jobs/{job.id}/outputs/{row.stem}",
    )
