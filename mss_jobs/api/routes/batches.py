"""Routes of the `batches` resource: submit a catalog (rows, an uploaded CSV/JSONL manifest, or an
S3 prefix), follow it, page through its jobs, cancel, retry the failed, export the report."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from mss_jobs.api.batch_schemas import (
    BatchCreate,
    BatchJobsPage,
    BatchOptions,
    BatchOut,
    BatchRetryOut,
    RejectionOut,
    ReportFormat,
)
from mss_jobs.api.deps import ApiState, IdempotencyHeader, SessionsDep, StateDep, error_responses
from mss_jobs.api.service import job_view
from mss_jobs.api.uploads import receive_upload, upload_openapi
from mss_jobs.batches.intake import IntakeResult, take_in
from mss_jobs.batches.manifest import (
    JobTemplate,
    ManifestItem,
    listing_rows,
    parse_s3_prefix,
    read_csv,
    read_json_rows,
    read_jsonl,
)
from mss_jobs.db.batch_dispatch import cancel_batch, retry_failed
from mss_jobs.db.batch_queries import (
    MAX_PAGE_SIZE,
    batch_progress,
    get_batch,
    iter_report,
    list_batch_jobs,
)
from mss_jobs.db.schema import Batch
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import JobStatus
from mss_jobs.errors import BatchNotFoundError, BatchStateError, ConfigError, ManifestError
from mss_jobs.storage import storage_from_settings

router = APIRouter(prefix="/v1/batches", tags=["batches"])

ManifestReader = Callable[..., Iterator[ManifestItem]]
"""`read_csv` or `read_jsonl`: (stream, template, *, allow_file_uris) → items."""

_ERRORS = error_responses(404, 409, 413, 422, 502, 503)


@router.post("", status_code=status.HTTP_201_CREATED, responses=_ERRORS)
def submit_batch(
    body: BatchCreate, response: Response, state: StateDep, key_header: IdempotencyHeader = None
) -> BatchOut:
    """A batch from inline `rows` or an S3 `prefix`; one job per row, fed by the dispatcher.

    Bad rows are refused with their line number (the response shows the first ones, the report
    all of them) and the others proceed. The same `key` again returns the same batch (200).
    """
    options = body.options()
    template = _template(options, state)
    if body.rows is not None:
        items: Iterable[ManifestItem] = read_json_rows(
            body.rows, template, allow_file_uris=_local(state)
        )
        source: dict[str, Any] = {"kind": "rows"}
    else:
        assert body.prefix is not None
        items, source = _listing(state, body, template)
    return _take_in(state, response, items, template, options, source, key_header)


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
    openapi_extra=upload_openapi(
        "BatchOptions", file_description="manifest.csv (header row) or manifest.jsonl"
    ),
)
async def upload_batch(
    request: Request, response: Response, state: StateDep, key_header: IdempotencyHeader = None
) -> BatchOut:
    """A batch from an uploaded manifest: CSV with a header row, or JSON Lines (by the file's
    extension, `.csv` / `.jsonl` / `.ndjson`). Streamed: any size, flat memory."""
    async with receive_upload(request, max_bytes=state.settings.max_upload_bytes) as upload:
        options = upload.parse_spec(BatchOptions, root="body")
        reader = _manifest_reader(upload.filename)
        source = {
            "kind": "manifest",
            "format": reader.__name__.removeprefix("read_"),
            "sha256": upload.sha256,
        }
        return await run_in_threadpool(
            _take_in_file, state, response, upload.path, reader, options, source, key_header
        )


def _take_in_file(
    state: ApiState,
    response: Response,
    path: Path,
    reader: ManifestReader,
    options: BatchOptions,
    source: dict[str, Any],
    key_header: str | None,
) -> BatchOut:
    template = _template(options, state)
    with path.open("rb") as stream:
        items = reader(stream, template, allow_file_uris=_local(state))
        return _take_in(state, response, items, template, options, source, key_header)


def _take_in(
    state: ApiState,
    response: Response,
    items: Iterable[ManifestItem],
    template: JobTemplate,
    options: BatchOptions,
    source: dict[str, Any],
    key_header: str | None,
) -> BatchOut:
    # Pull the first item now: a manifest-level error (bad header) must leave no batch behind.
    iterator = iter(items)
    first = next(iterator, None)
    result = take_in(
        state.sessions,
        chain([first], iterator) if first is not None else (),
        template=template,
        source=source,
        lane=options.queue,
        max_in_flight=options.max_in_flight,
        force=options.force,
        batch_key=key_header or options.key or options.idempotency_key,
    )
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return _view(state, result.batch_id, intake=result)


def _template(options: BatchOptions, state: ApiState) -> JobTemplate:
    model = options.model or state.settings.default_model
    return JobTemplate.build(model=model, params=options.params(), priority=options.priority)


def _local(state: ApiState) -> bool:
    return state.settings.storage_backend == "local"


def _listing(
    state: ApiState, body: BatchCreate, template: JobTemplate
) -> tuple[Iterable[ManifestItem], dict[str, Any]]:
    assert body.prefix is not None
    if state.settings.storage_backend != "s3":
        raise ConfigError("prefix: listing an S3 prefix needs MSS_STORAGE_BACKEND=s3")
    bucket, prefix = parse_s3_prefix(body.prefix)
    lister = storage_from_settings(state.settings, bucket=bucket, prefix="")
    source = {
        "kind": "s3",
        "prefix": body.prefix,
        "extensions": sorted(body.extensions or []),
        "glob": body.glob,
    }
    rows = listing_rows(
        lister.list_keys(prefix),
        template,
        bucket=bucket,
        prefix=prefix,
        extensions=body.extensions,
        glob=body.glob,
    )
    return rows, source


def _manifest_reader(filename: str) -> ManifestReader:
    suffix = Path(filename).suffix.lower()
    if suffix == ".csv":
        return read_csv
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl
    raise ManifestError(
        f"file: cannot tell the manifest format of {filename!r}; name it .csv or .jsonl"
    )


@router.get("/{batch_id}", responses=_ERRORS)
def read_batch(batch_id: uuid.UUID, state: StateDep) -> BatchOut:
    """Counts by status, progress, throughput and ETA."""
    return _view(state, batch_id)


@router.get("/{batch_id}/jobs", responses=_ERRORS)
def batch_jobs(
    batch_id: uuid.UUID,
    sessions: SessionsDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
) -> BatchJobsPage:
    """The batch's jobs in manifest line order; pass `next_cursor` back as `cursor`."""
    with transaction(sessions) as session:
        _existing(session, batch_id)
        jobs, after = list_batch_jobs(
            session,
            batch_id=batch_id,
            status=status_filter,
            limit=limit,
            after_line=int(cursor) if cursor else None,
        )
    return BatchJobsPage(
        jobs=[job_view(job) for job in jobs], next_cursor=str(after) if after else None
    )


@router.post("/{batch_id}/cancel", responses=_ERRORS)
def cancel(batch_id: uuid.UUID, state: StateDep) -> BatchOut:
    """Cancel the batch and every job not finished yet (running ones stop at their next write)."""
    with transaction(state.sessions) as session:
        if cancel_batch(session, batch_id=batch_id) is None:
            batch = _existing(session, batch_id)
            raise BatchStateError(
                f"batch {batch_id} is {batch.status}; only an active batch can be cancelled"
            )
    return _view(state, batch_id)


@router.post("/{batch_id}/retry-failed", responses=_ERRORS)
def retry(batch_id: uuid.UUID, state: StateDep) -> BatchRetryOut:
    """Failed jobs go back to pending; the dispatcher runs them again."""
    with transaction(state.sessions) as session:
        retried = retry_failed(session, batch_id=batch_id)
        if retried is None:
            batch = _existing(session, batch_id)
            raise BatchStateError(f"batch {batch_id} is {batch.status}; it cannot be retried")
    return BatchRetryOut(retried=retried, batch=_view(state, batch_id))


_REPORT_COLUMNS = (
    "line",
    "input",
    "ref",
    "status",
    "job_id",
    "error_code",
    "error_message",
    "outputs",
)


@router.get(
    "/{batch_id}/report",
    responses={**_ERRORS, 200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    response_class=StreamingResponse,
)
def report(
    batch_id: uuid.UUID, sessions: SessionsDep, format: ReportFormat = "csv"
) -> StreamingResponse:
    """Every manifest line in order: input → status, error, stem URIs (CSV or JSON Lines)."""
    with transaction(sessions) as session:
        _existing(session, batch_id)
    lines = _report_lines(sessions, batch_id, format)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    filename = f"batch-{batch_id}.{format}"
    return StreamingResponse(
        lines,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _report_lines(sessions: SessionsDep, batch_id: uuid.UUID, fmt: ReportFormat) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        writer.writerow(_REPORT_COLUMNS)
        yield buffer.getvalue()
    with transaction(sessions) as session:
        for row in iter_report(session, batch_id=batch_id):
            record = {
                "line": row.line,
                "input": row.input,
                "ref": row.ref,
                "status": str(row.status),
                "job_id": str(row.job_id) if row.job_id else None,
                "error_code": row.error_code,
                "error_message": row.error_message,
                "outputs": dict(row.outputs),
            }
            if fmt == "jsonl":
                yield json.dumps(record, ensure_ascii=False) + "\n"
                continue
            buffer.seek(0)
            buffer.truncate()
            record["outputs"] = ";".join(f"{stem}={uri}" for stem, uri in row.outputs.items())
            writer.writerow(["" if v is None else v for v in record.values()])
            yield buffer.getvalue()


def _existing(session: Session, batch_id: uuid.UUID) -> Batch:
    batch = get_batch(session, batch_id=batch_id)
    if batch is None:
        raise BatchNotFoundError(f"no batch {batch_id}")
    return batch


def _view(state: ApiState, batch_id: uuid.UUID, *, intake: IntakeResult | None = None) -> BatchOut:
    with transaction(state.sessions) as session:
        batch = _existing(session, batch_id)
        progress = batch_progress(session, batch_id=batch_id)
        assert progress is not None
    return BatchOut(
        id=batch.id,
        key=batch.batch_key,
        status=batch.status,
        model=batch.model,
        params=dict(batch.params),
        source=dict(batch.source),
        queue=batch.lane,
        priority=batch.priority,
        max_in_flight=batch.max_in_flight,
        force=batch.force,
        intake_finished=batch.intake_finished_at is not None,
        rows_accepted=batch.accepted_rows,
        rows_rejected=batch.rejected_rows,
        counts={str(status): count for status, count in progress.counts.items()},
        total=progress.total,
        finished=progress.finished,
        remaining=progress.remaining,
        progress=progress.progress,
        throughput_per_minute=progress.throughput_per_minute,
        eta_seconds=progress.eta.total_seconds() if progress.eta is not None else None,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
        rejections=[
            RejectionOut(line=r.line, input=r.input_text, code=r.code, message=r.message)
            for r in intake.rejections
        ]
        if intake is not None
        else None,
        created=intake.created if intake is not None else None,
    )
