"""batches: batches, batch_rejections; jobs gain pending, batch_line, client_ref, enqueued_at,
reused_from and the batch foreign key

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-30

Written by hand to match `mss_jobs/db/models.py` at this revision, and frozen like 0001 (types
spelled out, no model imports). SQLite alters `jobs` in batch mode (copy and rename), which
Alembic's `batch_alter_table` does for it; PostgreSQL gets plain ALTERs.

Downgrade drops the batches with their rejections. Their jobs stay (0001 already had a
`batch_id` column, without a foreign key); jobs still `pending` become `cancelled`, because 0001
has no pending status and no dispatcher would ever run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

OLD_JOB_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"
NEW_JOB_STATUSES = "status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')"
JOB_BATCH_LINE = (
    "(batch_id IS NULL AND batch_line IS NULL)"
    " OR (batch_id IS NOT NULL AND batch_line IS NOT NULL AND batch_line >= 1)"
)


def _timestamp(name: str, *, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("batch_key", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("params", JSON_DOCUMENT, nullable=False),
        sa.Column("params_hash", sa.String(length=64), nullable=False),
        sa.Column("source", JSON_DOCUMENT, nullable=False),
        sa.Column("lane", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_in_flight", sa.Integer(), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("accepted_rows", sa.Integer(), nullable=False),
        sa.Column("rejected_rows", sa.Integer(), nullable=False),
        _timestamp("intake_finished_at", nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint("batch_key", name=op.f("uq_batches_batch_key")),
        sa.CheckConstraint(
            "status IN ('active', 'completed', 'cancelled')", name=op.f("ck_batches_status")
        ),
        sa.CheckConstraint("lane IN ('interactive', 'bulk')", name=op.f("ck_batches_lane")),
        sa.CheckConstraint("priority BETWEEN 0 AND 9", name=op.f("ck_batches_priority")),
        sa.CheckConstraint(
            "max_in_flight BETWEEN 1 AND 10000", name=op.f("ck_batches_max_in_flight")
        ),
        sa.CheckConstraint(
            "accepted_rows >= 0 AND rejected_rows >= 0", name=op.f("ck_batches_row_counts")
        ),
    )
    op.create_index("ix_batches_created_at_id", "batches", ["created_at", "id"])

    op.create_table(
        "batch_rejections",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("input_text", sa.Text(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "line", name=op.f("pk_batch_rejections")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_batch_rejections_batch_id_batches"),
            ondelete="CASCADE",
        ),
    )

    # Jobs of batches that no longer exist (0001 had no foreign key) would fail the new one.
    op.execute("UPDATE jobs SET batch_id = NULL WHERE batch_id IS NOT NULL")
    op.drop_index("ix_jobs_batch_id", table_name="jobs")  # the unique (batch_id, …) covers it
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_line", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("client_ref", sa.String(length=255), nullable=True))
        batch.add_column(_timestamp("enqueued_at", nullable=True))
        batch.add_column(sa.Column("reused_from", sa.Uuid(), nullable=True))
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), NEW_JOB_STATUSES)
        batch.create_check_constraint(op.f("ck_jobs_batch_line"), JOB_BATCH_LINE)
        batch.create_unique_constraint(
            op.f("uq_jobs_batch_id_batch_line"), ["batch_id", "batch_line"]
        )
        batch.create_foreign_key(
            op.f("fk_jobs_batch_id_batches"),
            "batches",
            ["batch_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_foreign_key(
            op.f("fk_jobs_reused_from_jobs"), "jobs", ["reused_from"], ["id"], ondelete="SET NULL"
        )
    op.create_index(
        "ix_jobs_batch_id_status_batch_line", "jobs", ["batch_id", "status", "batch_line"]
    )
    op.create_index("ix_jobs_batch_id_finished_at", "jobs", ["batch_id", "finished_at"])
    op.create_index("ix_jobs_reused_from", "jobs", ["reused_from"])


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'pending'")
    for index in (
        "ix_jobs_reused_from",
        "ix_jobs_batch_id_finished_at",
        "ix_jobs_batch_id_status_batch_line",
    ):
        op.drop_index(index, table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("fk_jobs_reused_from_jobs"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_jobs_batch_id_batches"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_jobs_batch_id_batch_line"), type_="unique")
        batch.drop_constraint(op.f("ck_jobs_batch_line"), type_="check")
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), OLD_JOB_STATUSES)
        batch.drop_column("reused_from")
        batch.drop_column("enqueued_at")
        batch.drop_column("client_ref")
        batch.drop_column("batch_line")
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.drop_table("batch_rejections")
    op.drop_index("ix_batches_created_at_id", table_name="batches")
    op.drop_table("batches")
