"""Edge: creating jobs — one at a time (`create_job`, idempotent and race-safe) or a batch's rows
in bulk (`insert_batch_jobs`) — and the canonical params hash both use.

Creating a job is the one write that is not a guarded UPDATE (`job_transitions.py`): an INSERT
whose conflict on the idempotency key is resolved against the row that won
(`session.insert_unless_taken`). A batch's rows (`batch_intake.add_jobs`) become `pending` jobs
many per statement: PostgreSQL gets one array per column and each distinct params document once
per chunk (rows of a manifest share a few specs; sending, escaping and parsing the same JSON a
thousand times was most of the intake's cost); SQLite gets `session.insert_rows`. Both hash params
with `params_hash`, so equal work is recognised across single jobs and batches.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from mss_jobs.db.schema import Job, JobEvent, table_of, utcnow
from mss_jobs.db.session import insert_rows, insert_unless_taken
from mss_jobs.domain.lifecycle import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    EventKind,
    JobStatus,
)
from mss_jobs.errors import ConfigError

__all__ = ["BatchRow", "check_priority", "create_job", "insert_batch_jobs", "params_hash"]


def check_priority(priority: int) -> None:
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"{priority=} must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]")


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `params`: sorted keys, no spaces, UTF-8.

    Pass the *effective* params (defaults filled in), or equal requests hash differently.
    """
    canonical = json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def create_job(
    session: Session,
    *,
    model: str,
    params: Mapping[str, Any],
    input_uri: str,
    priority: int = DEFAULT_PRIORITY,
    idempotency_key: str | None = None,
    input_sha256: str | None = None,
    input_format: str | None = None,
    input_sample_rate: int | None = None,
    input_channels: int | None = None,
    input_duration_seconds: float | None = None,
    force: bool = False,
) -> Job:
    """Insert a queued job, or return the job already created under `idempotency_key`.

    `force` makes the worker run the model even when a finished job with the same input
    content, model and params could lend its outputs (see `mss_jobs.db.results`); it is not
    part of `params` (it does not change the result) nor of the idempotency check.

    Race-safe: of two concurrent requests with one key, one inserts and the other meets the
    unique constraint, rolls back to a savepoint and returns the winner's row. Reusing a key for a
    different request (model, params or input differ) raises `ConfigError`.
    """
    check_priority(priority)
    job = Job(
        id=uuid.uuid4(),
        status=JobStatus.QUEUED,
        model=model,
        params=dict(params),
        params_hash=params_hash(params),
        input_uri=input_uri,
        input_sha256=input_sha256,
        input_format=input_format,
        input_sample_rate=input_sample_rate,
        input_channels=input_channels,
        input_duration_seconds=input_duration_seconds,
        priority=priority,
        idempotency_key=idempotency_key,
        force=force,
    )
    if idempotency_key is None:
        _insert_new(session, job)
        return job
    key = idempotency_key
    existing = insert_unless_taken(
        session,
        insert=lambda: _insert_new(session, job),
        find=lambda: session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none(),
    )
    if existing is None:
        return job
    _check_same_request(existing, job)
    return existing


def _insert_new(session: Session, job: Job) -> None:
    now = utcnow()
    job.created_at = job.updated_at = now
    session.add(job)
    session.add(JobEvent(job_id=job.id, at=now, kind=EventKind.QUEUED, attempt=0))
    session.flush()


def _check_same_request(existing: Job, wanted: Job) -> None:
    same_input = (
        existing.input_sha256 == wanted.input_sha256
        if existing.input_sha256 is not None and wanted.input_sha256 is not None
        else existing.input_uri == wanted.input_uri
    )
    same_work = existing.model == wanted.model and existing.params_hash == wanted.params_hash
    if not (same_work and same_input):
        raise ConfigError(
            f"idempotency key {wanted.idempotency_key!r} was already used for job {existing.id} "
            "with a different model, params or input"
        )


class BatchRow(Protocol):
    """One accepted row, as `mss_jobs.batches.manifest.ManifestRow` carries it.

    `params` are the effective params (defaults filled in, overrides applied): their hash is
    what result dedup compares.
    """

    @property
    def line(self) -> int: ...
    @property
    def input(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def priority(self) -> int: ...
    @property
    def ref(self) -> str | None: ...


def insert_batch_jobs(
    session: Session,
    *,
    batch_id: uuid.UUID,
    rows: Sequence[BatchRow],
    now: datetime,
    force: bool = False,
) -> int:
    """Insert `rows` as pending jobs of the batch, skipping lines it has; how many were new.

    `force` is the batch's flag, copied onto every job: the worker reads it from the job row.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _insert_jobs_postgresql(session, batch_id=batch_id, rows=rows, now=now, force=force)
    return insert_rows(
        session,
        table_of(Job),
        [_job_values(row, batch_id=batch_id, now=now, force=force) for row in rows],
        skip_conflicts_on=("batch_id", "batch_line"),
    )


def _job_values(
    row: BatchRow, *, batch_id: uuid.UUID, now: datetime, force: bool
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "status": JobStatus.PENDING,
        "model": row.model,
        "params": dict(row.params),
        "params_hash": params_hash(row.params),
        "input_uri": row.input,
        "priority": row.priority,
        "progress": 0.0,
        "attempts": 0,
        "batch_id": batch_id,
        "batch_line": row.line,
        "client_ref": row.ref,
        "force": force,
        "created_at": now,
        "updated_at": now,
    }


_INSERT_JOBS_POSTGRESQL = text(
    """
    INSERT INTO jobs (id, status, model, params, params_hash, input_uri, priority, progress,
                      attempts, batch_id, batch_line, client_ref, force, created_at, updated_at)
    SELECT item.id, 'pending', item.model, shared.params[item.spec], shared.hashes[item.spec],
           item.input_uri, item.priority, 0, 0, :batch_id, item.line, item.ref, :force, :now,
           :now
    FROM unnest(CAST(:ids AS uuid[]), CAST(:lines AS integer[]), CAST(:inputs AS text[]),
                CAST(:refs AS text[]), CAST(:priorities AS integer[]),
                CAST(:models AS text[]), CAST(:specs AS integer[]))
             AS item(id, line, input_uri, ref, priority, model, spec),
         (SELECT CAST(:params AS jsonb[]) AS params, CAST(:hashes AS text[]) AS hashes) AS shared
    ON CONFLICT (batch_id, batch_line) DO NOTHING
    RETURNING 1
    """
)
"""One chunk of batch jobs as one array per column, and each distinct params document once:
rows of a manifest share a few specs, and sending (and escaping, and parsing) the same JSON a
thousand times was most of the intake's cost."""


def _insert_jobs_postgresql(
    session: Session,
    *,
    batch_id: uuid.UUID,
    rows: Sequence[BatchRow],
    now: datetime,
    force: bool,
) -> int:
    specs: dict[int, int] = {}  # id(params) → 1-based index into the shared arrays
    params: list[str] = []
    hashes: list[str] = []
    indexes: list[int] = []
    for row in rows:
        index = specs.get(id(row.params))  # the rows keep their params alive meanwhile
        if index is None:
            params.append(json.dumps(dict(row.params)))
            hashes.append(params_hash(row.params))
            index = specs[id(row.params)] = len(params)
        indexes.append(index)
    arguments = {
        "batch_id": batch_id,
        "force": force,
        "now": now,
        "ids": [uuid.uuid4() for _ in rows],
        "lines": [row.line for row in rows],
        "inputs": [row.input for row in rows],
        "refs": [row.ref for row in rows],
        "priorities": [row.priority for row in rows],
        "models": [row.model for row in rows],
        "specs": indexes,
        "params": params,
        "hashes": hashes,
    }
    return len(session.execute(_INSERT_JOBS_POSTGRESQL, arguments).all())
