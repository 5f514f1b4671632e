"""What the console shows and does: the message bytes as given to the SMTP server, when a
failed notification was last retried (its MAX_AGE counts from then), and each attempt's outcome
per recipient.

Dialect-neutral: plain nullable columns, nothing to backfill (older rows show their message as
it would be sent now, and attempts without per-recipient detail).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # zlib-compressed message as sent (app.store.raw_message); read only by the download
    op.add_column("notifications", sa.Column("raw_message", sa.LargeBinary))
    op.add_column("notifications", sa.Column("retried_at", sa.Double))
    # JSON list of {email, outcome, code, message}: what this attempt did to each recipient
    op.add_column("attempts", sa.Column("recipients", sa.Text))


def downgrade() -> None:
    op.drop_column("attempts", "recipients")
    op.drop_column("notifications", "retried_at")
    op.drop_column("notifications", "raw_message")
