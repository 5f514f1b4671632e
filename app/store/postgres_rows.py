"""How a notification row maps to records and back, for the PostgreSQL store.

Each row is parsed on its own, so the store can fail the one row that no longer parses and
carry on with the others.
"""

from __future__ import annotations

import json

import asyncpg
from pydantic import ValidationError

from app.api.schemas import NotificationRequest, Status
from app.store.records import NewNotification, Notification, Refusal
from app.store.rows import skipped

# The statement's start by the database's clock, as epoch seconds: the one clock every
# process sharing the database agrees on.
NOW = "extract(epoch FROM now())::double precision"

_TRUSTED = {"trusted": True}  # rows were validated when accepted; skip the costly checks
_REASON_CHARS = 500

COLUMNS = (
    "id, status, caller, request_id, request, message_id, subject, pending, delivered, refused,"
    " last_error,"
    " next_attempt_at, created_at, updated_at, sent_at, attempts, lease, retried_at, suppressed"
)
INSERT = (
    "INSERT INTO notifications (id, status, template, caller, request_id, request, tags,"
    " message_id, next_attempt_at, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
)


# A claimed notification carries the token that fences its outcome in `lease`: the row's
# claim count when this claim was made.
LeasedNotification = Notification


def insert_values(new: NewNotification) -> tuple[object, ...]:
    request = new.request
    return (
        new.id,
        new.status.value,
        request.template,
        new.caller,
        new.request_id,
        request.model_dump_json(by_alias=True, exclude_defaults=True),
        list(request.tags or ()),
        new.message_id,
        new.due_at,
        new.created_at,
    )


def why_unreadable(exc: Exception) -> str:
    """Why a stored row cannot be read, without echoing its content (context values)."""
    if isinstance(exc, ValidationError):
        problems = (
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        reason = "; ".join(problems)
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return f"stored notification unreadable ({reason})"[:_REASON_CHARS]


def notification_from(row: asyncpg.Record) -> Notification:
    return Notification(
        id=row["id"],
        status=Status(row["status"]),
        caller=row["caller"],
        request_id=row["request_id"],
        request=NotificationRequest.model_validate_json(row["request"], context=_TRUSTED),
        message_id=row["message_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        subject=row["subject"],
        pending=None if row["pending"] is None else json.loads(row["pending"]),
        delivered=None if row["delivered"] is None else json.loads(row["delivered"]),
        refused=[Refusal(**r) for r in json.loads(row["refused"])],
        suppressed=skipped(row["suppressed"]),
        last_error=row["last_error"],
        due_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
        attempt_count=row["attempts"],
        retried_at=row["retried_at"],
    )


def leased(row: asyncpg.Record) -> LeasedNotification:
    notification = notification_from(row)
    notification.lease = row["lease"]
    return notification
