"""The HTTP API under /v1: accept notifications, show them, list and preview templates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, Response, status

from app.addresses import sender_allowed
from app.deps import Authenticated, Services, ServicesDep
from app.errors import InvalidRequest, TemplateNotFound
from app.rendering import TEMPLATE_NAME
from app.schemas import (
    Accepted,
    Attempt,
    NotificationRequest,
    NotificationView,
    Preview,
    PreviewRequest,
    Recipients,
    TemplateView,
)
from app.store import Notification

router = APIRouter(prefix="/v1", dependencies=[Authenticated])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"description": "Missing or wrong API key."},
    422: {"description": "The request cannot be sent as it is; `detail` names the field."},
}


def check_sendable(request: NotificationRequest, services: Services) -> None:
    """The checks that need the templates and settings; everything else the model checked."""
    settings, catalog = services.settings, services.catalog
    try:
        missing = catalog.missing_variables(request.template, request.context)
    except TemplateNotFound as exc:
        raise InvalidRequest(("body", "template"), str(exc)) from exc
    if missing:
        raise InvalidRequest(
            ("body", "context"),
            f"template {request.template!r} needs {', '.join(missing)}, missing from context",
        )
    if len(request.recipients) > settings.max_recipients:
        raise InvalidRequest(
            ("body", "to"),
            f"{len(request.recipients)} recipients in to, cc and bcc; at most"
            f" {settings.max_recipients} are allowed",
        )
    if request.sender and not sender_allowed(
        request.sender, settings.allowed_senders, settings.mail_from
    ):
        raise InvalidRequest(
            ("body", "from"),
            f"{request.sender.email!r} is not an allowed sender; add it to ALLOWED_SENDERS",
        )


@router.post(
    "/notifications",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={**_ERRORS, 202: {"description": "Stored; delivery runs in the background."}},
)
async def accept_notification(
    request: NotificationRequest,
    services: ServicesDep,
    background: BackgroundTasks,
    response: Response,
) -> Accepted:
    check_sendable(request, services)
    # Store the effective sender: what was accepted is what goes out, even if MAIL_FROM changes.
    request.sender = request.sender or services.settings.mail_from
    notification = await services.store.create(request)
    background.add_task(services.delivery.deliver, notification.id)
    response.headers["Location"] = f"/v1/notifications/{notification.id}"
    return Accepted(
        id=notification.id, status=notification.status, created_at=_time(notification.created_at)
    )


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationView,
    response_model_by_alias=True,
    responses={404: {"description": "No notification with that id."}},
)
async def show_notification(notification_id: str, services: ServicesDep) -> NotificationView:
    notification = await services.store.get(notification_id)
    if notification is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no notification with id {notification_id!r}"
        )
    return notification_view(notification)


@router.get("/templates", response_model=list[TemplateView])
async def list_templates(services: ServicesDep) -> list[TemplateView]:
    return [
        TemplateView(name=t.name, description=t.description, variables=list(t.variables))
        for t in services.catalog.all()
    ]


@router.post(
    "/templates/{name}/preview",
    response_model=Preview,
    responses={**_ERRORS, 404: {"description": "No template of that name."}},
)
async def preview_template(
    name: Annotated[str, Path(pattern=TEMPLATE_NAME)],
    body: PreviewRequest,
    services: ServicesDep,
) -> Preview:
    catalog = services.catalog
    try:
        missing = catalog.missing_variables(name, body.context)
    except TemplateNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if missing:
        raise InvalidRequest(
            ("body", "context"),
            f"template {name!r} needs {', '.join(missing)}, missing from context",
        )
    rendered = catalog.render(name, body.context)
    return Preview(subject=rendered.subject, html=rendered.html, text=rendered.text)


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def notification_view(n: Notification) -> NotificationView:
    r = n.request
    return NotificationView(
        id=n.id,
        status=n.status,
        template=r.template,
        sender=r.sender,
        recipients=Recipients(to=r.to, cc=r.cc, bcc=r.bcc),
        reply_to=r.reply_to,
        subject=n.subject,
        attempts=[
            Attempt(
                at=_time(a.at),
                outcome=a.outcome,
                smtp_code=a.smtp_code,
                detail=a.detail,
                duration_ms=a.duration_ms,
            )
            for a in n.attempts
        ],
        last_error=n.last_error,
        next_attempt_at=_time(n.next_attempt_at),
        created_at=_time(n.created_at),
        updated_at=_time(n.updated_at),
        sent_at=_time(n.sent_at),
        message_id=n.message_id,
        tags=r.tags,
        metadata=r.metadata,
    )
