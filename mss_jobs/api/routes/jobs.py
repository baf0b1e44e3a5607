"""Routes of the `jobs` resource: submit (JSON or upload), read, list, cancel, retry, delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from mss_jobs.api.deps import (
    ApiState,
    IdempotencyHeader,
    QueueDep,
    SessionsDep,
    StateDep,
    StorageDep,
    error_responses,
)
from mss_jobs.api.schemas import JobCreate, JobOut, JobPage, JobRetry, JobSpec
from mss_jobs.api.service import effective_params, enqueue_or_fail, job_view, output_location
from mss_jobs.api.uploads import ReceivedUpload, receive_upload, upload_openapi
from mss_jobs.db.job_intake import create_job
from mss_jobs.db.job_queries import MAX_PAGE_SIZE, get_job, list_jobs, list_outputs
from mss_jobs.db.job_transitions import cancel_job, delete_job, retry_job
from mss_jobs.db.schema import Job
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import JobStatus
from mss_jobs.errors import (
    ConfigError,
    IdempotencyConflictError,
    JobNotFoundError,
    JobStateConflictError,
    OutputNotFoundError,
)
from mss_jobs.storage import LocalStorage, S3Uri, input_key, job_prefix, parse_uri

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_ERRORS = error_responses(404, 409, 413, 422, 503)


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
def submit_job(
    body: JobCreate,
    response: Response,
    state: StateDep,
    idempotency_key: IdempotencyHeader = None,
) -> JobOut:
    """Queue a job for an input already in object storage (`s3://bucket/key`).

    A repeated request with the same idempotency key returns the first job (200); the same key
    with a different model, params or input is refused (409).
    """
    key = _idempotency_key(idempotency_key, body.idempotency_key)
    model, params = effective_params(body, state.settings)
    try:
        parsed = parse_uri(body.input)
    except ConfigError as exc:
        raise ConfigError(f"input: {exc}") from exc
    if state.settings.storage_backend == "s3" and not isinstance(parsed, S3Uri):
        raise ConfigError(f"input: expected s3://bucket/key, got {body.input!r}")
    with transaction(state.sessions) as session:
        replay = key is not None and _by_key(session, key) is not None
        job = _create_job(session, body, model, params, key=key, input_uri=body.input)
    if replay:
        response.status_code = status.HTTP_200_OK
    else:
        enqueue_or_fail(
            state.sessions, state.queue, job_id=job.id, lane=body.queue, priority=job.priority
        )
    return job_view(job)


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ERRORS,
    openapi_extra=upload_openapi("JobSpec"),
)
async def upload_job(
    request: Request,
    response: Response,
    state: StateDep,
    idempotency_key: IdempotencyHeader = None,
) -> JobOut:
    """Upload the input (multipart: `file`, and `spec` as JSON) and queue a job for it."""
    async with receive_upload(request, max_bytes=state.settings.max_upload_bytes) as upload:
        spec = upload.parse_spec(JobSpec, root="spec")
        job, created = await run_in_threadpool(
            _create_uploaded,
            state,
            spec,
            upload,
            _idempotency_key(idempotency_key, spec.idempotency_key),
        )
    if created:
        await run_in_threadpool(
            lambda: enqueue_or_fail(
                state.sessions, state.queue, job_id=job.id, lane=spec.queue, priority=job.priority
            )
        )
    else:
        response.status_code = status.HTTP_200_OK
    return job_view(job)


def _create_uploaded(
    state: ApiState, spec: JobSpec, upload: ReceivedUpload, key: str | None
) -> tuple[Job, bool]:
    model, params = effective_params(spec, state.settings)
    # The object key holds the job id, which exists only once the row does: insert with a
    # placeholder unique to this request, upload, then set the real URI before committing. A row
    # that comes back without our placeholder was created earlier under the same key.
    placeholder = f"upload://pending/{uuid.uuid4().hex}"
    with transaction(state.sessions) as session:
        job = _create_job(
            session, spec, model, params, key=key, input_uri=placeholder, input_sha256=upload.sha256
        )
        if job.input_uri != placeholder:
            return job, False
        target = input_key(state.storage.prefix, job.id, upload.filename)
        job.input_uri = state.storage.upload_file(upload.path, target).uri
    return job, True


def _create_job(
    session: Session,
    spec: JobSpec,
    model: str,
    params: dict[str, Any],
    *,
    key: str | None,
    input_uri: str,
    input_sha256: str | None = None,
) -> Job:
    """The row for `spec` (`model` and `params` as `effective_params` gave them); the key of an
    earlier, different request is a 409 (`IdempotencyConflictError`)."""
    try:
        return create_job(
            session,
            model=model,
            params=params,
            input_uri=input_uri,
            input_sha256=input_sha256,
            priority=spec.priority,
            idempotency_key=key,
            force=spec.force,
        )
    except ConfigError as exc:
        raise IdempotencyConflictError(str(exc)) from exc


@router.get("/{job_id}", responses=_ERRORS)
def read_job(job_id: uuid.UUID, state: StateDep) -> JobOut:
    """One job with its progress, error and outputs (presigned download URLs)."""
    with transaction(state.sessions) as session:
        job = _existing(session, job_id)
        outputs = list_outputs(session, job_id=job_id)
    return job_view(
        job,
        outputs=outputs,
        storage=state.storage,
        presign_seconds=state.settings.presign_expiry_seconds,
    )


_MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}


@router.get(
    "/{job_id}/outputs/{stem}",
    responses={**_ERRORS, 200: {"content": {"audio/*": {}}}, 307: {"description": "to S3"}},
    response_class=Response,
)
def download_output(
    job_id: uuid.UUID,
    stem: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")],
    state: StateDep,
) -> Response:
    """A stem's audio: streamed from local storage, or a redirect to a presigned S3 URL."""
    with transaction(state.sessions) as session:
        job = _existing(session, job_id)
        row = next((o for o in list_outputs(session, job_id=job_id) if o.stem == stem), None)
        if row is None:
            raise OutputNotFoundError(f"job {job_id} ({job.status}) has no output {stem!r}")
    where = output_location(job, row, storage=state.storage)
    if isinstance(state.storage, LocalStorage):
        return FileResponse(
            state.storage.path_for(where.key),
            media_type=_MEDIA_TYPES.get(row.format, "application/octet-stream"),
            filename=where.filename,
        )
    url = state.storage.presign_get(
        where.key, expires_in=state.settings.presign_expiry_seconds, filename=where.filename
    )
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("", responses=_ERRORS)
def list_all_jobs(
    sessions: SessionsDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    """Jobs newest first; pass `next_cursor` back as `cursor` for the next page."""
    with transaction(sessions) as session:
        jobs, next_cursor = list_jobs(
            session, status=status_filter, model=model, limit=limit, cursor=cursor
        )
    return JobPage(jobs=[job_view(job) for job in jobs], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", responses=_ERRORS)
def cancel(job_id: uuid.UUID, sessions: SessionsDep) -> JobOut:
    """queued or running → cancelled (a running worker stops at its next progress write)."""
    with transaction(sessions) as session:
        cancelled = cancel_job(session, job_id=job_id)
        job = _changed(session, job_id, cancelled, only="queued or running jobs can be cancelled")
    return job_view(job)


@router.post("/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
def retry(
    job_id: uuid.UUID,
    sessions: SessionsDep,
    queue: QueueDep,
    body: Annotated[JobRetry | None, Body()] = None,
) -> JobOut:
    """failed or cancelled → queued again (attempts are kept), then enqueued; a batch's job goes
    back to pending instead, for the batch's dispatcher to send."""
    lane = (body or JobRetry()).queue
    with transaction(sessions) as session:
        retried = retry_job(session, job_id=job_id)
        job = _changed(session, job_id, retried, only="failed or cancelled jobs can be retried")
    if (
        job.status is JobStatus.QUEUED
    ):  # a batch's job went back to pending: its dispatcher sends it
        enqueue_or_fail(sessions, queue, job_id=job.id, lane=lane, priority=job.priority)
    return job_view(job)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
def delete(job_id: uuid.UUID, sessions: SessionsDep, storage: StorageDep) -> Response:
    """Delete the job's rows, then every stored object under its prefix (input and stems)."""
    with transaction(sessions) as session:
        if not delete_job(session, job_id=job_id):
            raise JobNotFoundError(f"no job {job_id}")
    # Rows first: a failure here leaves orphaned objects, never a job pointing at deleted ones.
    storage.delete_prefix(job_prefix(storage.prefix, job_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _existing(session: Session, job_id: uuid.UUID) -> Job:
    job = get_job(session, job_id=job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id}")
    return job


def _changed(session: Session, job_id: uuid.UUID, job: Job | None, *, only: str) -> Job:
    """`job` as a state change returned it; when the change did not apply, 409 naming the job's
    status and what `only` such jobs allow (404 for an unknown job)."""
    if job is None:
        current = _existing(session, job_id)
        raise JobStateConflictError(f"job {job_id} is {current.status}; only {only}")
    return job


def _by_key(session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


def _idempotency_key(header: str | None, field: str | None) -> str | None:
    if header is not None and field is not None and header != field:
        raise ConfigError(
            f"idempotency_key: the Idempotency-Key header {header!r} and the body field "
            f"{field!r} differ"
        )
    return header if header is not None else field
