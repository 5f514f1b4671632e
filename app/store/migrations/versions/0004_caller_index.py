"""Each caller lists its own notifications: an index in the list's order within one caller, so
that a page of one caller's mail is read straight off the index however big the table grows
(the list's order is created_at, id, newest first; its cursor is the last row's pair).

Dialect-neutral: the same index on every backend.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("notifications_by_caller", "notifications", ["caller", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("notifications_by_caller", table_name="notifications")
