"""GET /v1/notifications/{id}/events: the notification's webhook events, each with its
delivery attempts, for the caller that owns it (an admin key: anyone's)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import Reader, ServicesDep
from app.api.ownership import not_found, owner
from app.api.refusals import ADMISSION, SCOPED, STORE
from app.api.views import moment, optional_moment
from app.webhooks.events import EventStatus, WebhookEvent

router = APIRouter(
    prefix="/v1/notifications",
    tags=["notifications"],
    responses={
        **ADMISSION,
        **SCOPED,
        **STORE,
        404: {"description": "No such notification, or it is another caller's."},
    },
)


class EventAttemptView(BaseModel):
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null: none came.")
    error: str | None = Field(description="Why it did not count as delivered; null: it did.")
    duration_ms: float


class EventView(BaseModel):
    id: str = Field(description="The event id, the same on every attempt: de-duplicate by it.")
    type: str = Field(examples=["notification.sent"])
    status: EventStatus = Field(
        description="`pending` (owed: tried again at next_attempt_at), `delivered` (the"
        " receiver answered 2xx) or `failed` (given up after WEBHOOK_MAX_AGE)."
    )
    url: str
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    attempts: list[EventAttemptView]
    body: dict[str, Any] = Field(description="The JSON POSTed, as sent on every attempt.")


class EventList(BaseModel):
    items: list[EventView]


@router.get("/{notification_id}/events", response_model=EventList)
async def list_events(notification_id: str, services: ServicesDep, me: Reader) -> EventList:
    """Oldest first. A notification without a callback_url has none."""
    notification = await services.store.get(notification_id, owner=owner(me))
    if notification is None:
        raise not_found(notification_id)
    events = await services.store.events(notification_id, owner=owner(me))
    return EventList(items=[_view(e) for e in events])


def _view(event: WebhookEvent) -> EventView:
    pending = event.status is EventStatus.PENDING
    return EventView(
        id=event.id,
        type=event.type,
        status=event.status,
        url=event.url,
        created_at=moment(event.created_at),
        next_attempt_at=optional_moment(event.next_attempt_at) if pending else None,
        delivered_at=optional_moment(event.delivered_at),
        last_error=event.last_error,
        attempts=[
            EventAttemptView(
                at=moment(a.at),
                status_code=a.status_code,
                error=a.error,
                duration_ms=round(a.duration_ms, 1),
            )
            for a in event.attempts
        ],
        body=json.loads(event.body),
    )
