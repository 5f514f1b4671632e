"""The first schema: notifications, their attempts, idempotency keys.

SQLite: the schema exactly as the service made it before it had migrations, with IF NOT EXISTS,
so a file made then passes through this revision unchanged (and is upgraded by the next ones),
and a new file gets the same tables. An attempt's `id INTEGER PRIMARY KEY` is SQLite's rowid.

PostgreSQL: the same tables in PostgreSQL's terms. Times are epoch seconds in double precision,
as in SQLite, so both stores hand out identical records and list cursors (created_at, id)
round-trip exactly. The request is kept as the JSON text the API accepted, not jsonb: jsonb would
refuse a \\u0000 in a string, and would print 1e5 back as 100000 (an int), changing what a
template renders; its tags are copied into a text[] column for the tag filter. Ids sort with the
"C" collation, byte order, like SQLite's.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE = (
    """CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    caller TEXT NOT NULL,
    request_id TEXT,
    request TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT,
    pending TEXT,
    refused TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL
)""",
    "CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at, id)",
    """CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications(id),
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code INTEGER,
    detail TEXT,
    duration_ms REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS attempts_by_notification ON attempts(notification_id)",
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (caller, key)
)""",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys(created_at)",
)

_ID = sa.Text(collation="C")
# Every state in which a row is still due some day: the partial index claims walk.
_UNFINISHED = "status IN ('scheduled', 'queued', 'deferred', 'sending')"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
    elif dialect == "postgresql":
        _upgrade_postgresql()
    else:
        raise NotImplementedError(f"revision 0001 has no {dialect} flavour")


def _upgrade_postgresql() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("pending", sa.Text),
        sa.Column("refused", sa.Text, nullable=False, server_default="[]"),
        sa.Column("last_error", sa.Text),
        # due at: send time, retry time, or lease expiry while `sending`
        sa.Column("next_attempt_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("sent_at", sa.Double),
    )
    op.create_index(
        "notifications_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text(_UNFINISHED),
    )
    op.create_index("notifications_created", "notifications", ["created_at", "id"])
    op.create_index("notifications_tags", "notifications", ["tags"], postgresql_using="gin")
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "notification_id",
            _ID,
            sa.ForeignKey("notifications.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("smtp_code", sa.Integer),
        sa.Column("detail", sa.Text),
        sa.Column("duration_ms", sa.Double, nullable=False),
    )
    op.create_index("attempts_by_notification", "attempts", ["notification_id", "id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("notification_id", _ID, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("idempotency_keys_age", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("attempts")
    op.drop_table("notifications")
