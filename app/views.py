"""Stored records as the API shows them, and the opaque cursor of list pages."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from app.errors import InvalidRequest
from app.records import Notification, initial_status
from app.schemas import (
    Accepted,
    Attempt,
    NotificationView,
    Recipients,
    RefusedRecipient,
    Status,
)


def moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def optional_moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else moment(epoch)


def accepted_view(n: Notification) -> Accepted:
    """The 202 body; a replay shows the status the notification had when it was accepted."""
    status = initial_status(n.request, accepted_at=n.created_at)
    return Accepted(id=n.id, status=status, created_at=moment(n.created_at))


def notification_view(n: Notification) -> NotificationView:
    r = n.request
    waiting = n.status in (Status.DEFERRED, Status.SCHEDULED)
    return NotificationView(
        id=n.id,
        status=n.status,
        template=r.template,
        caller=n.caller,
        sender=r.sender,
        recipients=Recipients(to=r.to, cc=r.cc, bcc=r.bcc),
        reply_to=r.reply_to,
        subject=n.subject,
        attempts=[
            Attempt(
                at=moment(a.at),
                outcome=a.outcome,
                smtp_code=a.smtp_code,
                detail=a.detail,
                duration_ms=round(a.duration_ms, 1),
            )
            for a in n.attempts
        ],
        refused_recipients=[
            RefusedRecipient(email=x.email, code=x.code, message=x.message) for x in n.refused
        ],
        last_error=n.last_error,
        next_attempt_at=optional_moment(n.due_at) if waiting else None,
        created_at=moment(n.created_at),
        updated_at=moment(n.updated_at),
        sent_at=optional_moment(n.sent_at),
        message_id=n.message_id,
        tags=r.tags,
        metadata=r.metadata,
    )


def encode_cursor(n: Notification) -> str:
    return base64.urlsafe_b64encode(f"{n.created_at!r}|{n.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, notification_id = base64.urlsafe_b64decode(cursor).decode().split("|", 1)
        return float(created_at), notification_id
    except ValueError:
        raise InvalidRequest(
            ("query", "cursor"), "not a cursor from a previous page's next_cursor"
        ) from None
