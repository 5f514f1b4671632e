"""What the JSON API and the console both do to one notification: cancel it, retry it (and wake
the worker), and produce its message as sent. Each route checks the caller's scope first; here
the store's `owner` keeps a caller to its own notifications, and the answers for an unknown id
and a status that forbids the action are the API's (app.api.ownership)."""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.background import BackgroundTask

from app.api.callers import Caller
from app.api.deps import Services
from app.api.ownership import check_acted, not_found, owner
from app.delivery.compose import compose, unsubscribe_links
from app.errors import TemplateBroken, TemplateNotFound
from app.store.records import Notification


async def cancel(services: Services, notification_id: str, *, caller: Caller) -> Notification:
    """Cancel a scheduled, queued or deferred notification; 404 or 409 (HTTPException) else."""
    cancelled, current = await services.store.cancel(notification_id, owner=owner(caller))
    check_acted(
        notification_id,
        cancelled,
        current,
        only="scheduled, queued or deferred notifications can be cancelled",
    )
    notification = await services.store.get(notification_id, owner=owner(caller))
    assert notification is not None
    return notification


async def retry(
    services: Services, notification_id: str, *, caller: Caller
) -> tuple[Notification, BackgroundTask | None]:
    """Queue a failed notification again (404 or 409 else); with the task to run after the
    answer, which hands it to this process's worker."""
    retried, current = await services.store.retry(notification_id, owner=owner(caller))
    check_acted(notification_id, retried, current, only="failed notifications can be retried")
    notification = await services.store.get(notification_id, owner=owner(caller))
    assert notification is not None
    services.queue.added(1)
    worker = services.worker
    # else (DELIVERY=off) worker processes find it in the store, woken by the store's notice
    background = BackgroundTask(worker.deliver_now, notification_id) if worker else None
    return notification, background


async def message_as_sent(
    services: Services, notification: Notification, *, caller: Caller
) -> bytes:
    """The raw message of the last attempt that sent it, byte for byte; before any attempt
    sent it, the message as it would be sent now (its Date is now's). 409 (HTTPException) when
    it was not sent and its template cannot build it now."""
    data = await services.store.sent_message(notification.id, owner=owner(caller))
    if data is not None:
        return data
    try:
        _, mail = compose(
            notification,
            catalog=services.catalog,
            default_sender=services.settings.mail_from,
            links=unsubscribe_links(services.settings),
        )
    except (TemplateBroken, TemplateNotFound) as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"notification {notification.id} was not sent and cannot be built now: {exc}",
        ) from exc
    return mail.data


async def owned(services: Services, notification_id: str, *, caller: Caller) -> Notification:
    """The notification if it is the caller's (any, for admin); 404 (HTTPException) else."""
    notification = await services.store.get(notification_id, owner=owner(caller))
    if notification is None:
        raise not_found(notification_id)
    return notification
