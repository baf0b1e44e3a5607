"""Request and response bodies of the batches resource (`/v1/batches`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mss_jobs.api.schemas import JobOut, JobSpec
from mss_jobs.db.schema import DEFAULT_MAX_IN_FLIGHT, MAX_MAX_IN_FLIGHT
from mss_jobs.domain.lifecycle import BatchStatus, Lane

__all__ = [
    "BatchCreate",
    "BatchJobsPage",
    "BatchOptions",
    "BatchOut",
    "BatchRetryOut",
    "RejectionOut",
]

BatchKey = Field(default=None, min_length=1, max_length=255)


class BatchOptions(JobSpec):
    """One job spec for every row (JobSpec's fields) plus how the batch runs.

    The `spec` form field of `POST /v1/batches/upload`, and the base of `POST /v1/batches`.
    """

    model_config = ConfigDict(extra="forbid")

    queue: Lane = "bulk"
    """The lane of the batch's jobs: `bulk` (default) yields to interactive work."""
    key: str | None = BatchKey
    """Resubmission key: the same key and spec return the same batch and add nothing twice."""
    max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, ge=1, le=MAX_MAX_IN_FLIGHT)
    """At most this many of the batch's jobs are queued or running at once."""
    force: bool = False
    """Separate every row even when an identical result exists (skip the result cache)."""


class BatchCreate(BatchOptions):
    """`POST /v1/batches`: rows given inline, or an S3 prefix to list."""

    rows: list[Any] | None = Field(default=None, max_length=1_000_000)
    """Manifest rows: objects with the manifest columns (`input`, `model`, `stems`, `format`,
    `bit_depth`, `sample_rate`, `priority`, `derive`, `ref`) or bare input URIs."""
    prefix: str | None = Field(default=None, min_length=6, max_length=2048)
    """`s3://bucket/folder/`: every object under it (after the filters) is a row."""
    extensions: list[str] | None = Field(default=None, max_length=50)
    """With `prefix`: keep keys with these suffixes, e.g. ["flac", "wav"] (case-insensitive)."""
    glob: str | None = Field(default=None, min_length=1, max_length=1024)
    """With `prefix`: keep keys whose path after the prefix matches (fnmatch; `*` crosses `/`)."""

    @model_validator(mode="after")
    def _one_source(self) -> BatchCreate:
        if (self.rows is None) == (self.prefix is None):
            raise ValueError("give exactly one of `rows` and `prefix`")
        if self.prefix is None and (self.extensions or self.glob):
            raise ValueError("`extensions` and `glob` filter a `prefix` listing")
        return self

    def options(self) -> BatchOptions:
        return BatchOptions.model_validate(
            self.model_dump(exclude={"rows", "prefix", "extensions", "glob"})
        )


class RejectionOut(BaseModel):
    line: int
    input: str
    code: str
    message: str


class BatchOut(BaseModel):
    id: uuid.UUID
    key: str | None
    status: BatchStatus
    model: str
    params: dict[str, Any]
    source: dict[str, Any]
    queue: Lane
    priority: int
    max_in_flight: int
    force: bool
    intake_finished: bool
    rows_accepted: int
    rows_rejected: int
    counts: dict[str, int]
    """Jobs by status (pending, queued, running, succeeded, failed, cancelled)."""
    total: int
    finished: int
    remaining: int
    progress: float
    throughput_per_minute: float
    """Jobs finished per minute over the last 10 minutes."""
    eta_seconds: float | None
    """At the current pace; None while nothing has finished recently."""
    created_at: datetime
    finished_at: datetime | None
    rejections: list[RejectionOut] | None = None
    """On creation: the first rows this request refused (the report lists them all)."""
    created: bool | None = None
    """On creation: False when the key named an existing batch."""


class BatchJobsPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None


class BatchRetryOut(BaseModel):
    retried: int
    batch: BatchOut


ReportFormat = Literal["csv", "jsonl"]
