"""The job database's tables as SQLAlchemy 2.0 typed ORM classes, portable to PostgreSQL and SQLite.

    jobs               one separation request and its lifecycle (status, attempts, progress, error)
    job_outputs        one row per (job, stem): a re-run replaces the row instead of adding one
    job_events         append-only history (queued, claimed, redelivered, stage, outcome, retry)
    batches            one catalog submission: the job spec its rows share, where the rows came
                       from, how many may be in flight, how many rows were accepted or rejected
    batch_rejections   one manifest row refused at intake (line, raw text, code, message)

Portability rules: ids are `Uuid` (native on PostgreSQL, CHAR(32) on SQLite); JSON is JSONB on
PostgreSQL; enums are VARCHAR (+ a CHECK for the status), never a native ENUM type, so adding a
value is a plain migration; every timestamp is timezone-aware UTC in Python (`UtcDateTime`), which
is also how SQLite, lacking time zones, stores it. Children cascade in the database (`ON DELETE
CASCADE`), so deleting a job is one statement. `migrations/versions` must create exactly this
schema; `tests/db/test_migrations.py` compares the two. `table_of` gives a class's Core `Table`
for the bulk statements that bypass the ORM.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from mss_jobs.domain.lifecycle import (
    DEFAULT_PRIORITY,
    LANES,
    MAX_PRIORITY,
    MIN_PRIORITY,
    BatchStatus,
    EventKind,
    JobStatus,
)

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "MAX_MAX_IN_FLIGHT",
    "Base",
    "Batch",
    "BatchRejection",
    "Job",
    "JobEvent",
    "JobOutput",
    "UtcDateTime",
    "table_of",
    "utcnow",
]

DEFAULT_MAX_IN_FLIGHT = 100
MAX_MAX_IN_FLIGHT = 10_000
"""How many of one batch's jobs may be queued or running at once (the broker holds at most that
many of its messages)."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names: Alembic (and SQLite batch mode) can address every one."""


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind stored)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that only accepts aware values and always returns UTC ones.

    SQLite has no time zone type: values are stored as naive UTC text, which also keeps their
    text order equal to time order (keyset pagination compares them).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
EventId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def _enum_values(enum_class: type[JobStatus] | type[EventKind] | type[BatchStatus]) -> list[str]:
    return [member.value for member in enum_class]


def _string_enum(
    enum_class: type[JobStatus] | type[EventKind] | type[BatchStatus], *, name: str, length: int
) -> Enum:
    """An enum column stored as VARCHAR by value, never a native ENUM type; its CHECK, where it
    has one, is declared by name in `__table_args__` (portable and explicit)."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=_enum_values,
        validate_strings=True,
    )


def _one_of(column: str, values: list[str] | tuple[str, ...]) -> str:
    """A portable CHECK expression `column IN ('a', 'b')`."""
    return "{} IN ({})".format(column, ", ".join(f"'{value}'" for value in values))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UtcDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JsonDocument,
    }


class Job(Base):
    """One separation request: what to separate, how, and how far it got."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    status: Mapped[JobStatus] = mapped_column(
        _string_enum(JobStatus, name="job_status", length=16), default=JobStatus.QUEUED
    )
    model: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]]
    params_hash: Mapped[str] = mapped_column(String(64))
    """sha256 of the canonical JSON of the effective params (`job_transitions.params_hash`): the
    dedup key."""

    input_uri: Mapped[str] = mapped_column(Text)
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    """Known at creation for uploads; set by the worker after fetching a URL input."""
    input_format: Mapped[str | None] = mapped_column(String(16))
    input_sample_rate: Mapped[int | None]
    input_channels: Mapped[int | None]
    input_duration_seconds: Mapped[float | None]

    priority: Mapped[int] = mapped_column(default=DEFAULT_PRIORITY)
    progress: Mapped[float] = mapped_column(default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    """Claims so far; also the fencing token a worker passes back with its writes."""
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))

    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    batch_line: Mapped[int | None]
    """The manifest line (or listing position) the job came from; unique within its batch, which
    is what makes re-reading a manifest insert nothing twice."""
    client_ref: Mapped[str | None] = mapped_column(String(255))
    """An opaque reference the client attached to the manifest row, echoed in the report."""
    enqueued_at: Mapped[datetime | None]
    """When the batch dispatcher last published the job id: a `queued` job whose message is old
    may have been lost by the broker and is published again."""
    force: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Run the model even when a finished job already holds this result (no result cache). Not
    part of `params`: it changes how the result is obtained, not what it is."""
    reused_from: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL")
    )
    """The job whose outputs this one reused instead of separating again (result cache)."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    """Start of the current (latest) attempt."""
    finished_at: Mapped[datetime | None]

    outputs: Mapped[list[JobOutput]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobOutput.stem",
    )
    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobEvent.id",
    )

    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        # Row-level idempotency of batch intake; also serves every "jobs of this batch" lookup.
        UniqueConstraint("batch_id", "batch_line"),
        CheckConstraint(_one_of("status", _enum_values(JobStatus)), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint(f"priority BETWEEN {MIN_PRIORITY} AND {MAX_PRIORITY}", name="priority"),
        CheckConstraint(
            "(batch_id IS NULL AND batch_line IS NULL)"
            " OR (batch_id IS NOT NULL AND batch_line IS NOT NULL AND batch_line >= 1)",
            name="batch_line",
        ),
        # Listing is newest first, keyset-paginated on (created_at, id), optionally filtered.
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_created_at_id", "status", "created_at", "id"),
        Index("ix_jobs_model_created_at_id", "model", "created_at", "id"),
        Index("ix_jobs_dedup", "input_sha256", "model", "params_hash"),
        # The dispatcher: a batch's pending jobs in line order, its in-flight count, its counts.
        Index("ix_jobs_batch_id_status_batch_line", "batch_id", "status", "batch_line"),
        # Throughput: a batch's jobs finished in the last minutes.
        Index("ix_jobs_batch_id_finished_at", "batch_id", "finished_at"),
        # Deleting a job finds the jobs that reused it (ON DELETE SET NULL) without a scan.
        Index("ix_jobs_reused_from", "reused_from"),
    )

    def __repr__(self) -> str:
        return f"Job(id={self.id}, status={self.status.value}, model={self.model!r})"


class JobOutput(Base):
    """One delivered stem. The key is (job, stem), so recording it again replaces it."""

    __tablename__ = "job_outputs"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    stem: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    sample_rate: Mapped[int]
    channels: Mapped[int]
    duration_seconds: Mapped[float]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="outputs")

    __table_args__ = (CheckConstraint("size_bytes >= 0", name="size_bytes"),)

    def __repr__(self) -> str:
        return f"JobOutput(job_id={self.job_id}, stem={self.stem!r}, uri={self.uri!r})"


class JobEvent(Base):
    """One entry of a job's history; `attempt` is the job's attempt count when it happened."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[EventKind] = mapped_column(_string_enum(EventKind, name="event_kind", length=32))
    attempt: Mapped[int]
    worker: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None]

    job: Mapped[Job] = relationship(back_populates="events")

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    def __repr__(self) -> str:
        return f"JobEvent(job_id={self.job_id}, kind={self.kind.value}, attempt={self.attempt})"


class Batch(Base):
    """One catalog submission: a job spec shared by many rows, and how its jobs are fed.

    The jobs (`jobs.batch_id`) and the refused rows (`batch_rejections`) go with it on delete.
    """

    __tablename__ = "batches"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    batch_key: Mapped[str | None] = mapped_column(String(255))
    """The client's resubmission key: the same key and spec return this batch again."""
    status: Mapped[BatchStatus] = mapped_column(
        _string_enum(BatchStatus, name="batch_status", length=16), default=BatchStatus.ACTIVE
    )
    model: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]]
    """The effective job params every row starts from (row overrides apply on top)."""
    params_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[dict[str, Any]]
    """Where the rows come from, e.g. `{"kind": "manifest", "format": "csv"}` or
    `{"kind": "s3", "prefix": "s3://bucket/tracks/", "glob": "*.flac"}`; part of the batch's
    identity for `batch_key`, so it holds no incidental metadata."""
    lane: Mapped[str] = mapped_column(String(16), default="bulk")
    priority: Mapped[int] = mapped_column(default=DEFAULT_PRIORITY)
    max_in_flight: Mapped[int] = mapped_column(default=DEFAULT_MAX_IN_FLIGHT)
    force: Mapped[bool] = mapped_column(default=False)
    """Separate every row even when a finished job already holds the result (no result cache)."""
    accepted_rows: Mapped[int] = mapped_column(default=0)
    rejected_rows: Mapped[int] = mapped_column(default=0)
    intake_finished_at: Mapped[datetime | None]
    """Set once the whole manifest (or listing) was read; a batch completes only after it."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("batch_key"),
        CheckConstraint(_one_of("status", _enum_values(BatchStatus)), name="status"),
        CheckConstraint(_one_of("lane", LANES), name="lane"),
        CheckConstraint(f"priority BETWEEN {MIN_PRIORITY} AND {MAX_PRIORITY}", name="priority"),
        CheckConstraint(f"max_in_flight BETWEEN 1 AND {MAX_MAX_IN_FLIGHT}", name="max_in_flight"),
        CheckConstraint("accepted_rows >= 0 AND rejected_rows >= 0", name="row_counts"),
        Index("ix_batches_created_at_id", "created_at", "id"),
    )

    def __repr__(self) -> str:
        return f"Batch(id={self.id}, status={self.status.value}, model={self.model!r})"


class BatchRejection(Base):
    """One manifest row refused at intake; the key is (batch, line), so re-reading adds nothing."""

    __tablename__ = "batch_rejections"

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(primary_key=True)
    input_text: Mapped[str] = mapped_column(Text)
    """The row as it was read (truncated), so the client can find and fix it."""
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"BatchRejection(batch_id={self.batch_id}, line={self.line}, code={self.code!r})"


def table_of(entity: type[Any]) -> Table:
    """The Core `Table` of a mapped class, for statements that bypass the ORM."""
    table = entity.__table__
    assert isinstance(table, Table)
    return table
