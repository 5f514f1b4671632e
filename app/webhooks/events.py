"""Events: which state changes are told, what their body says, and the outbox records.

`EVENT_TYPES` is the one table of the statuses worth telling: a state change into one of them,
of a notification with a callback_url, writes an event (the stores call `event_for`, in the
transaction of the change). The body is made then, from the notification as the change leaves
it, and sent byte for byte on every attempt, so a retry carries the same event id and content.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel

from app.api.schemas import RecipientStatus, Status
from app.api.views import recipient_status
from app.ids import new_uuid
from app.store.records import Notification, Refusal, Skipped

# The statuses a caller is told of, and the event type of each. A new one is one line here.
EVENT_TYPES: dict[Status, str] = {
    Status.SENT: "notification.sent",
    Status.DEFERRED: "notification.deferred",
    Status.FAILED: "notification.failed",
    Status.CANCELLED: "notification.cancelled",
    Status.SUPPRESSED: "notification.suppressed",
}


class EventStatus(StrEnum):
    PENDING = "pending"  # owed: tried until delivered or WEBHOOK_MAX_AGE
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up after WEBHOOK_MAX_AGE


class EventNotification(BaseModel):
    id: str
    status: Status
    template: str
    recipients: list[RecipientStatus]
    attempts: int
    last_error: str | None
    message_id: str
    tags: list[str]
    metadata: dict[str, str]


class EventBody(BaseModel):
    id: str
    type: str
    created_at: datetime
    # whose notification: callers that share WEBHOOK_SECRET sign alike, so a receiver tells its
    # own events from another caller's (sent, or replayed, to its URL) by this signed field
    caller: str
    notification: EventNotification


@dataclass(frozen=True)
class NewEvent:
    """An event to write into the outbox, with the state change it tells of."""

    id: str
    notification_id: str
    caller: str
    type: str
    url: str
    body: str
    created_at: float


@dataclass(frozen=True)
class EventAttempt:
    at: float
    status_code: int | None  # the receiver's answer; None: no answer
    error: str | None  # why it did not count as delivered; None: it did
    duration_ms: float


@dataclass
class WebhookEvent:
    id: str
    seq: int
    notification_id: str
    caller: str
    type: str
    url: str
    body: str
    created_at: float
    status: EventStatus
    attempt_count: int = 0
    lease: int = 0  # the claim's fencing token
    next_attempt_at: float | None = None  # due at; the lease's end while claimed
    last_error: str | None = None
    delivered_at: float | None = None
    attempts: list[EventAttempt] = field(default_factory=list)


def event_for(notification: Notification, *, now: float) -> NewEvent | None:
    """The event `notification`, as a state change just left it, owes its caller; None if it
    has no callback_url or its status is not worth telling."""
    url = notification.request.callback_url
    kind = EVENT_TYPES.get(notification.status)
    if url is None or kind is None:
        return None
    event_id = new_uuid()
    body = EventBody(
        id=event_id,
        type=kind,
        created_at=datetime.fromtimestamp(now, UTC),
        caller=notification.caller,
        notification=EventNotification(
            id=notification.id,
            status=notification.status,
            template=notification.request.template,
            recipients=[
                recipient_status(email, outcome, why)
                for email, outcome, why in notification.recipient_outcomes()
            ],
            attempts=notification.attempt_count,
            last_error=notification.last_error,
            message_id=notification.message_id,
            tags=notification.request.tags,
            metadata=notification.request.metadata,
        ),
    )
    return NewEvent(
        id=event_id,
        notification_id=notification.id,
        caller=notification.caller,
        type=kind,
        url=url,
        body=body.model_dump_json(),
        created_at=now,
    )


def event_for_attempt(
    notification: Notification,
    *,
    status: Status,
    subject: str | None,
    pending: list[str],
    delivered: list[str],
    refused: list[Refusal],
    last_error: str | None,
    suppressed: list[Skipped] | None,
    now: float,
) -> NewEvent | None:
    """The event a recorded attempt owes: `notification` as claimed, with what the attempt
    changed (the arguments of the store's `finish_attempt`)."""
    if notification.request.callback_url is None or status not in EVENT_TYPES:
        return None  # the common case, decided before any copying
    after = dataclasses.replace(
        notification,
        status=status,
        subject=subject or notification.subject,
        pending=pending,
        delivered=delivered,
        refused=refused,
        last_error=last_error,
        suppressed=notification.suppressed if suppressed is None else suppressed,
        attempt_count=notification.attempt_count + 1,
        updated_at=now,
        attempts=[],
    )
    return event_for(after, now=now)
