"""Fenced claims and per-recipient outcome: an attempts counter, a lease token, the recipients
the server took; on SQLite also a due-order index.

Dialect-neutral: each column is added only where the table lacks it, because SQLite files made
before migrations existed may hold some of them already (and the oldest lack `request_id`).
`attempts` counts the attempt rows kept so far when it is added.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _columns() -> tuple[sa.Column[object], ...]:
    """Fresh each time: a Column belongs to the one table it is added to."""
    return (
        sa.Column("request_id", sa.Text),
        # one more per recorded attempt, so a claim need not count the attempt rows
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        # the fencing token: each claim adds one; finish and release apply only while the row
        # still holds the value their claim set
        sa.Column("lease", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("delivered", sa.Text),  # JSON list of the recipients the server took
    )


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("notifications")}
    for column in _columns():
        if column.name not in present:
            op.add_column("notifications", column)
    if "attempts" not in present:
        op.execute(
            "UPDATE notifications SET attempts ="
            " (SELECT COUNT(*) FROM attempts a WHERE a.notification_id = notifications.id)"
        )
    if op.get_context().dialect.name == "sqlite":
        # claims walk due rows in due order; PostgreSQL's partial index is in 0001
        op.execute(
            "CREATE INDEX IF NOT EXISTS notifications_due_at ON notifications(next_attempt_at)"
            " WHERE next_attempt_at IS NOT NULL"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP INDEX IF EXISTS notifications_due_at")
    for name in ("delivered", "lease", "attempts"):
        op.drop_column("notifications", name)
