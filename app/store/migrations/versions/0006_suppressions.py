"""The suppression list (addresses a caller's mail no longer goes to, per category or in all of
them) and, per notification, the recipients its attempts skipped as suppressed.

Dialect-neutral but for the collation: on PostgreSQL the key columns sort with "C", byte order,
as SQLite's do, so both stores page the list alike. Nothing to backfill: older notifications
skipped no one (NULL reads as an empty list).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        # lower case: suppressions match without regard to case
        sa.Column("address", _KEY, nullable=False),
        sa.Column("caller", _KEY, nullable=False),
        # '' for every category (a key column cannot be NULL)
        sa.Column("category", _KEY, nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        # address first: delivery looks up a notification's few addresses, the list pages by it
        sa.PrimaryKeyConstraint("address", "caller", "category"),
    )
    op.create_index("suppressions_by_caller", "suppressions", ["caller", "address"])
    # JSON list of {email, reason}
    op.add_column("notifications", sa.Column("suppressed", sa.Text))


def downgrade() -> None:
    op.drop_column("notifications", "suppressed")
    op.drop_index("suppressions_by_caller", "suppressions")
    op.drop_table("suppressions")
