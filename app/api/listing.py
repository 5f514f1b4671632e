"""What a list of notifications is narrowed to, read from a request's query: one reading for
the JSON API's `GET /v1/notifications` and the console's activity page, so the two lists mean
the same by the same words."""

from __future__ import annotations

from datetime import datetime

from app.addresses import normalised_email
from app.api.schemas import Status
from app.errors import InvalidRequest
from app.store.records import NotificationFilter


def notification_filter(
    *,
    status: Status | None = None,
    tag: str | None = None,
    template: str | None = None,
    recipient: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> NotificationFilter:
    """The store's filter; a recipient that is no address is a 422 naming `query.recipient`."""
    return NotificationFilter(
        status=status,
        tag=tag,
        template=template,
        recipient=None if recipient is None else recipient_address(recipient),
        created_after=NotificationFilter.epoch(created_after),
        created_before=NotificationFilter.epoch(created_before),
    )


def recipient_address(text: str) -> str:
    """The address as the store keeps recipients: normalised as when the mail was accepted
    (the domain's case and Unicode form), so "Ada@EXAMPLE.com" finds ada@example.com's mail.
    Only a whole address: a filter that could match part of one would be a search of
    everyone's addresses by fragments."""
    try:
        return normalised_email(text.strip())
    except ValueError as exc:
        raise InvalidRequest(("query", "recipient"), str(exc)) from None
