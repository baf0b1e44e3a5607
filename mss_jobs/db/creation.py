"""Edge: creating a job — the canonical params hash and the idempotent, race-safe insert.

Apart from the transitions (`jobs.py`, which re-exports both names) because creating a row is
the one write that is not a guarded UPDATE: it is an INSERT whose conflict on the idempotency key
is resolved against the row that won. The bulk intake of batches (`bulk.py`, `batches.py`) hashes
params the same way, so equal work is recognised across single jobs and batches.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mss_jobs.db.models import Job, JobEvent, utcnow
from mss_jobs.domain.lifecycle import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    EventKind,
    JobStatus,
)
from mss_jobs.errors import ConfigError

__all__ = ["create_job", "params_hash"]


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
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"{priority=} must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
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

    existing = _by_idempotency_key(session, idempotency_key)
    if existing is None:
        try:
            with session.begin_nested():
                _insert_new(session, job)
        except IntegrityError:
            existing = _by_idempotency_key(session, idempotency_key)
            if existing is None:  # the violation was not about the key
                raise
        else:
            return job
    _check_same_request(existing, job)
    return existing


def _insert_new(session: Session, job: Job) -> None:
    now = utcnow()
    job.created_at = job.updated_at = now
    session.add(job)
    session.add(JobEvent(job_id=job.id, at=now, kind=EventKind.QUEUED, attempt=0))
    session.flush()


def _by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


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
