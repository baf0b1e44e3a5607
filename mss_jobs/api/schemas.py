"""Request and response bodies of the HTTP API, apart from the ORM models they are built from.

Requests are strict about shape (`extra="forbid"`: a misspelt field is a 422 naming it); the
separation params are then validated a second time by `workers.params.parse_params`, the same
model the worker applies, so a job the API accepted is a job the worker can read.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mss_jobs.domain.lifecycle import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY, JobStatus, Lane

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "JobCreate",
    "JobError",
    "JobOut",
    "JobOutput",
    "JobPage",
    "JobRetry",
    "JobSpec",
    "ModelOut",
    "ModelsOut",
    "ReadinessCheck",
    "ReadinessOut",
]

IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobSpec(_Strict):
    """What to run: the model, the separation params and where the job goes in the queue.

    The body of `POST /v1/jobs/upload` (its `spec` form field, as JSON) and the base of the JSON
    body of `POST /v1/jobs`. Every separation field is optional: None means the model's default.
    """

    model: str | None = Field(default=None, min_length=1, max_length=128)
    stems: list[str] | None = None
    derived: list[str] = Field(default_factory=list)
    format: Literal["wav", "flac", "mp3"] | None = None
    bit_depth: Literal[16, 24, 32] | None = None
    sample_rate: int | None = None
    chunk_seconds: float | None = None
    overlap: float | None = None
    window: str | None = None
    batch_size: int | None = None
    priority: int = Field(default=DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    queue: Lane = "interactive"
    idempotency_key: IdempotencyKey | None = None
    force: bool = False
    """Run the model even when a finished job with the same input content, model and params
    could lend its outputs (skip the result cache). Not a separation param: it does not change
    the result."""

    def params(self) -> dict[str, Any]:
        """The separation params as the worker reads them (before defaults are filled in)."""
        return self.model_dump(
            include={
                "stems",
                "derived",
                "format",
                "bit_depth",
                "sample_rate",
                "chunk_seconds",
                "overlap",
                "window",
                "batch_size",
            },
            exclude_none=True,
        )


class JobCreate(JobSpec):
    """`POST /v1/jobs`: a job whose input is already in object storage."""

    input: str = Field(min_length=1, max_length=2048, examples=["s3://bucket/tracks/song.flac"])


class JobRetry(_Strict):
    """`POST /v1/jobs/{id}/retry`: which lane the retried job goes to."""

    queue: Lane = "interactive"


class JobError(BaseModel):
    code: str
    message: str


class JobOutput(BaseModel):
    stem: str
    format: str
    sample_rate: int
    channels: int
    duration_seconds: float
    size_bytes: int
    sha256: str
    url: str
    """A presigned GET URL, valid for `url_expires_in` seconds from the response (`file://` with
    local storage, which only a client on the same machine can read)."""
    url_expires_in: int
    download: str
    """This API's path for the stem: streams it (local storage) or redirects (307) to a fresh
    presigned URL (S3). Works wherever the API is reachable."""


class JobOut(BaseModel):
    id: uuid.UUID
    status: JobStatus
    model: str
    params: dict[str, Any]
    input: str
    priority: int
    progress: float
    stage: str | None
    attempts: int
    error: JobError | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reused_from: uuid.UUID | None = None
    """The job whose outputs this one copied instead of running the model (the result cache);
    None when the model ran, or when that job was deleted since."""
    outputs: list[JobOutput] | None = None
    """Present on a single job (GET /v1/jobs/{id}); omitted from listings."""


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None


class ModelOut(BaseModel):
    name: str
    description: str
    stems: list[str]
    kind: Literal["builtin", "neural"] = "builtin"
    """`builtin`: DSP, no files; `neural`: a community network that needs its weights."""
    architecture: str | None = None
    """bs_roformer, mel_band_roformer, mdx23c or htdemucs (neural models)."""
    available: bool = True
    """Whether this service has the model's files: a job for an unavailable model waits for
    its download on the worker (when pulling on demand is on) or fails `model.unavailable`."""
    license: str | None = None
    """What is known of the weights' license (neural models)."""


class ModelsOut(BaseModel):
    models: list[ModelOut]
    default: str


class ReadinessCheck(BaseModel):
    ok: bool
    detail: str | None = None


class ReadinessOut(BaseModel):
    ready: bool
    checks: dict[str, ReadinessCheck]


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[str] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
