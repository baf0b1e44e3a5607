"""jobs.force: a job may opt out of the result cache

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-01

Written by hand to match `mss_jobs/db/models.py` at this revision, and frozen like 0001 and 0002.
The column gets a server default (false), so existing rows and writers that do not name it
(batch intake's multi-row INSERT before this revision) keep the cache's behaviour. SQLite adds
the column in place (`ADD COLUMN` with a constant default) and drops it in batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("force", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("force")
