"""Stored records as the API shows them, and the opaque cursor of list pages.

Every conversion here is total: whatever a stored row holds, the API can show it (the store
hands over what it could read; times beyond the calendar are clamped to its ends).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import ValidationError

from app.addresses import Address
from app.api.schemas import (
    Accepted,
    Attempt,
    AttemptRecipient,
    NotificationRequest,
    NotificationView,
    RecipientOutcome,
    Recipients,
    RecipientStatus,
    RefusedRecipient,
    Status,
    SuppressedRecipient,
)
from app.errors import InvalidRequest
from app.store.records import (
    Notification,
    Refusal,
    Skipped,
    Suppression,
    envelope_recipients,
    initial_status,
)

_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def moment(epoch: float) -> datetime:
    """The UTC time of a stored epoch; one beyond what a datetime holds (before year 1, after
    year 9999, infinite) is shown as the nearest end: 0001-01-01 or 9999-12-31T23:59:59.999999."""
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError, OSError):
        if math.isnan(epoch):
            return datetime.fromtimestamp(0, UTC)
        return _LAST if epoch > 0 else _FIRST


def optional_moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else moment(epoch)


def accepted_view(n: Notification, *, suppressed: Mapping[str, Suppression]) -> Accepted:
    """The 202 body; a replay shows the status the notification had when it was accepted.
    `suppressed`: the entries of the suppression list its recipients are on now (by lower-case
    address)."""
    status = initial_status(n.request, accepted_at=n.created_at)
    skipped = [
        SuppressedRecipient(email=email, reason=found.reason)
        for email in envelope_recipients(n.request)
        if (found := suppressed.get(email.lower())) is not None
    ]
    return Accepted(id=n.id, status=status, created_at=moment(n.created_at), suppressed=skipped)


def notification_view(n: Notification) -> NotificationView:
    r = n.request
    waiting = n.status in (Status.DEFERRED, Status.SCHEDULED)
    return NotificationView(
        id=n.id,
        status=n.status,
        template=r.template,
        caller=n.caller,
        sender=_shown_address(r.sender),
        recipients=_recipients(r),
        reply_to=_shown_address(r.reply_to),
        subject=n.subject,
        attempts=[
            Attempt(
                at=moment(a.at),
                outcome=a.outcome,
                smtp_code=a.smtp_code,
                detail=a.detail,
                duration_ms=round(a.duration_ms, 1),
                recipients=[
                    AttemptRecipient(
                        email=r.email, outcome=r.outcome, code=r.code, message=r.message
                    )
                    for r in a.recipients
                ],
            )
            for a in n.attempts
        ],
        refused_recipients=[
            RefusedRecipient(email=x.email, code=x.code, message=x.message) for x in n.refused
        ],
        recipients_status=[
            recipient_status(email, outcome, why) for email, outcome, why in n.recipient_outcomes()
        ],
        last_error=n.last_error or _unreadable(n),
        next_attempt_at=optional_moment(n.due_at) if waiting else None,
        created_at=moment(n.created_at),
        updated_at=moment(n.updated_at),
        sent_at=optional_moment(n.sent_at),
        message_id=n.message_id,
        tags=r.tags,
        metadata=r.metadata,
    )


def recipient_status(
    email: str, outcome: RecipientOutcome, why: Refusal | Skipped | None
) -> RecipientStatus:
    if isinstance(why, Refusal):
        return RecipientStatus(email=email, status=outcome, code=why.code, message=why.message)
    if isinstance(why, Skipped):
        return RecipientStatus(email=email, status=outcome, reason=why.reason)
    return RecipientStatus(email=email, status=outcome)


def _recipients(r: NotificationRequest) -> Recipients:
    """Addresses read back from the store are validated again for the answer; one that no
    longer passes (a row edited by hand) is left out rather than failing the answer."""
    try:
        return Recipients(to=r.to, cc=r.cc, bcc=r.bcc)
    except ValidationError:
        return Recipients(to=_valid_only(r.to), cc=_valid_only(r.cc), bcc=_valid_only(r.bcc))


def _valid_only(addresses: list[Address]) -> list[Address]:
    return [a for a in map(_shown_address, addresses) if a is not None]


def _shown_address(address: Address | None) -> Address | None:
    if address is None:
        return None
    try:
        return Address.model_validate(address)
    except ValidationError:
        return None


def _unreadable(n: Notification) -> str | None:
    if n.unreadable is None:
        return None
    return f"the stored notification cannot be read in full: {n.unreadable}"


def encode_cursor(n: Notification) -> str:
    return base64.urlsafe_b64encode(f"{n.created_at!r}|{n.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, notification_id = base64.urlsafe_b64decode(cursor).decode().split("|", 1)
        moment = float(created_at)
        # we never write nan| (a time compares with nothing) or an empty id; a row edited by
        # hand may hold an infinite time, and its cursor must page on like any other
        # nor a NUL (no id holds one, and PostgreSQL cannot compare with it)
        if math.isnan(moment) or not notification_id or "\x00" in notification_id:
            raise ValueError(cursor)
        return moment, notification_id
    except ValueError:
        raise InvalidRequest(
            ("query", "cursor"), "not a cursor from a previous page's next_cursor"
        ) from None
