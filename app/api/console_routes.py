"""What the console does to one notification beyond show and cancel: retry a failed one, and
download its message as sent (or, before any attempt sent it, as it would be sent now)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api import actions
from app.api.deps import Reader, Sender, ServicesDep
from app.api.refusals import ADMISSION, SCOPED, STORE
from app.api.schemas import Accepted, Status
from app.api.views import moment

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


@router.post(
    "/{notification_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={
        202: {"description": "Queued again; delivery runs in the background."},
        409: {"description": "Only failed notifications can be retried."},
    },
)
async def retry_notification(notification_id: str, services: ServicesDep, me: Sender) -> Response:
    """Queue a failed notification again with a new attempt budget (MAX_ATTEMPTS, MAX_AGE from
    now) and the same Message-ID. Recipients who already have it are not sent it again; those
    refused for good before are tried again."""
    notification, background = await actions.retry(services, notification_id, caller=me)
    body = Accepted(
        id=notification_id, status=Status.QUEUED, created_at=moment(notification.created_at)
    )
    return Response(
        body.model_dump_json(),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": f"{router.prefix}/{notification_id}"},
        media_type="application/json",
        background=background,
    )


@router.get(
    "/{notification_id}/message",
    response_class=Response,
    responses={
        200: {
            "content": {"message/rfc822": {}},
            "description": "The message as the SMTP server was given it (BCC is never in it).",
        },
        409: {"description": "Not sent yet, and its template cannot render it now."},
    },
)
async def download_message(notification_id: str, services: ServicesDep, me: Reader) -> Response:
    """The raw message of the last attempt that sent it, byte for byte; before any attempt
    sent it, the message as it would be sent now (its Date is now's)."""
    notification = await actions.owned(services, notification_id, caller=me)
    data = await actions.message_as_sent(services, notification, caller=me)
    return Response(
        data,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{notification_id}.eml"'},
    )
