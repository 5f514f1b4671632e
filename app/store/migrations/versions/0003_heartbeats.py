"""Worker heartbeats: each delivering process writes when it was last alive, so that a health
check (`notifier health`) can tell a live worker from a dead or stuck one.

Dialect-neutral: the same table on every backend.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        # host:pid, or a name of the worker's own
        sa.Column("worker", sa.Text, primary_key=True),
        # epoch seconds by the worker's clock
        sa.Column("beat_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("heartbeats")
