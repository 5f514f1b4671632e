"""Alembic's entry point: runs the revisions on the connection that `migrate()` opened (and
whose transaction, with its advisory lock, it owns). Dialect-neutral on purpose: a revision that
differs between SQLite and PostgreSQL asks `op.get_context().dialect.name`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through app.store.migrations.migrate(DATABASE_URL)")
# The schema is written by hand in each revision (no autogenerate), so there is no metadata.
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
