"""Status webhooks: an outbox of events, written in the same transaction as the state change
they tell of, and each delivery attempt of an event.

`seq` orders a notification's events (an event is not sent while an earlier one of the same
notification is still owed); `id` is the event id the receiver de-duplicates by. `body` is the
JSON as it was when the state changed, sent byte for byte on every attempt. `next_attempt_at`
means "due at", as for notifications: the retry time of a pending event, its lease expiry while
a worker sends it, NULL once it is delivered or given up.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        # SQLite: INTEGER PRIMARY KEY, the rowid; PostgreSQL: an identity column
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            sa.Identity(always=True),
            primary_key=True,
        ),
        sa.Column("id", _ID, nullable=False, unique=True),
        sa.Column("notification_id", _ID, nullable=False),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        # pending (owed), delivered, failed (given up after WEBHOOK_MAX_AGE)
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("next_attempt_at", sa.Double),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        # the claim's fencing token, as for notifications
        sa.Column("lease", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Double),
    )
    op.create_index(
        "webhook_events_due",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index("webhook_events_by_notification", "webhook_events", ["notification_id", "seq"])
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            sa.Identity(always=True),
            primary_key=True,
        ),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("status_code", sa.Integer),  # the receiver's answer; NULL: none came
        sa.Column("error", sa.Text),  # why it did not count as delivered; NULL: it did
        sa.Column("duration_ms", sa.Double, nullable=False),
    )
    op.create_index("webhook_attempts_by_event", "webhook_attempts", ["event_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_events")
