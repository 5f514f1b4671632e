"""Deciding whether a request can be accepted: the checks that need templates and settings
(the model checked the rest), back-pressure, and the fingerprint that idempotency compares."""

from __future__ import annotations

import hashlib
import json
import time

from app.addresses import sender_allowed
from app.api.caller_limits import check_recipients, check_sender, check_template
from app.api.callers import Caller
from app.api.limits import check_attachments, check_context
from app.api.queue_depth import QueueDepth
from app.api.schemas import NotificationRequest
from app.errors import InvalidRequest, QueueFull, TemplateNotFound
from app.rendering.catalog import TemplateCatalog
from app.settings import Settings
from app.store.records import NewNotification


def check_sendable(
    request: NotificationRequest, *, settings: Settings, catalog: TemplateCatalog, caller: Caller
) -> None:
    check_template(request, caller)  # first: a template the key may not use is all it learns
    try:
        missing = catalog.missing_variables(request.template, request.context)
    except TemplateNotFound as exc:
        raise InvalidRequest(("body", "template"), str(exc)) from exc
    if missing:
        raise InvalidRequest(("body", "context"), missing_message(request.template, missing))
    check_context(request.context, settings)
    check_send_at(request, settings)
    check_attachments(request.attachments, settings)
    if len(request.recipients) > settings.max_recipients:
        raise InvalidRequest(
            ("body", "to"),
            f"{len(request.recipients)} recipients in to, cc and bcc; at most"
            f" {settings.max_recipients} are allowed",
        )
    check_recipients(request, caller)
    if request.sender and not sender_allowed(
        request.sender, settings.allowed_senders, settings.mail_from
    ):
        raise InvalidRequest(
            ("body", "from"),
            f"{request.sender.email!r} is not an allowed sender; add it to ALLOWED_SENDERS",
        )
    check_sender(request, caller, settings)


def check_send_at(request: NotificationRequest, settings: Settings) -> None:
    """A notification waits in the store until its send_at: bound how long (and so the value,
    which the model already keeps within what a datetime can hold)."""
    if request.send_at is None:
        return
    ahead = request.send_at.timestamp() - time.time()
    if ahead > settings.max_schedule_ahead:
        raise InvalidRequest(
            ("body", "send_at"),
            f"{request.send_at.isoformat()} is {ahead:.0f} s ahead; MAX_SCHEDULE_AHEAD allows"
            f" {settings.max_schedule_ahead:.0f} s ({settings.max_schedule_ahead / 86400:g} days)",
        )


def missing_message(template: str, missing: list[str]) -> str:
    return f"template {template!r} needs {', '.join(missing)}, missing from context"


def prepare(
    request: NotificationRequest, *, settings: Settings, catalog: TemplateCatalog, caller: Caller
) -> NewNotification:
    """Check a request, for its caller, and turn it into a notification ready to store."""
    check_sendable(request, settings=settings, catalog=catalog, caller=caller)
    # Store the effective sender: what was accepted is what goes out, even if MAIL_FROM changes.
    request.sender = request.sender or settings.mail_from
    return NewNotification.from_request(request, sender=request.sender, caller=caller.name)


async def make_room(queue: QueueDepth, count: int, *, high_water: int) -> None:
    """Refuse new work while too much waits, instead of growing without bound."""
    waiting = await queue.current()
    if waiting + count > high_water:
        raise QueueFull(
            f"{waiting} notifications are waiting to be sent (QUEUE_HIGH_WATER is"
            f" {high_water}); try again shortly"
        )


def fingerprint(request: NotificationRequest) -> str:
    """Equal for equal requests, whatever the order of keys in the JSON."""
    canonical = json.dumps(request.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
