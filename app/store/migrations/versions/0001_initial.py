"""The initial schema: notifications, their attempts, idempotency keys (PostgreSQL).

Times are epoch seconds in double precision, as in the SQLite store, so both hand out identical
records and list cursors (created_at, id) round-trip exactly. The request is kept as the JSON text
the API accepted, not jsonb: jsonb would refuse a \\u0000 in a string, and would print 1e5 back as
100000 (an int), changing what a template renders; its tags are copied into a text[] column for
the tag filter. Ids sort with the "C" collation, byte order, like SQLite's.

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

_ID = sa.Text(collation="C")
# Every state in which a row is still due some day: the partial index claims walk.
_UNFINISHED = "status IN ('scheduled', 'queued', 'deferred', 'sending')"


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect != "postgresql":
        raise NotImplementedError(f"revision 0001 has no {dialect} flavour yet")
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
        sa.Column("delivered", sa.Text),
        sa.Column("refused", sa.Text, nullable=False, server_default="[]"),
        sa.Column("last_error", sa.Text),
        # due at: send time, retry time, or lease expiry while `sending`
        sa.Column("next_attempt_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("sent_at", sa.Double),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        # the fencing token: each claim adds one; finish and release apply only while the row
        # still holds the value their claim set
        sa.Column("lease", sa.Integer, nullable=False, server_default="0"),
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
