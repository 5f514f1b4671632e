"""A notification's page: what happened to it (every attempt, each recipient's outcome), the
message as sent (or as it would be sent), and its actions, cancel and retry.

The page reads through the API's own view of a notification (app.api.views) and acts through
app.api.actions, with the API's scopes: cancel needs `cancel`, retry needs `send`. Its HTML part
is served alone, for a sandboxed iframe, under a policy that lets it run nothing and load
nothing but images; the raw message downloads as the API's `/message` does. An unknown id, and
another caller's, is the same friendly 404 page.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response

from app.api import actions
from app.api.callers import Caller, Scope
from app.api.deps import Services
from app.api.schemas import Status
from app.api.views import notification_view
from app.console.mail_parts import MailParts, mail_parts
from app.console.pages import HEADERS, ConsoleCaller, CsrfChecked, render, see_other
from app.store.records import WAITING, Notification

router = APIRouter(prefix="/console/notifications", include_in_schema=False)

# The mail's HTML alone: no script, no fetch, no form, no frame, only images (https: and
# inline) and inline styles; `sandbox` makes it an opaque origin even opened on its own.
MAIL_CSP = (
    "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; sandbox; "
    "frame-ancestors 'self'"
)
DONE = {"cancelled": "Cancelled.", "retried": "Queued again: it is sent in the background."}
_DONE_AS = {"cancel": "cancelled", "retry": "retried"}


@router.get("/{notification_id}", response_class=HTMLResponse)
async def notification_page(
    request: Request, notification_id: str, caller: ConsoleCaller, done: str | None = None
) -> Response:
    found = await _owned(request, notification_id, caller=caller)
    return await _page(request, found, caller=caller, notice=DONE.get(done or ""))


@router.get("/{notification_id}/progress", response_class=HTMLResponse)
async def notification_progress(
    request: Request, notification_id: str, caller: ConsoleCaller
) -> Response:
    """The status and the timeline alone, which the page polls while one watches."""
    found = await _owned(request, notification_id, caller=caller)
    view = notification_view(found)
    return render(request, "notification_progress.html", caller=caller, n=view)


@router.get("/{notification_id}/html")
async def notification_html(
    request: Request, notification_id: str, caller: ConsoleCaller
) -> Response:
    found = await _owned(request, notification_id, caller=caller)
    parts, _ = await _parts(request, found, caller=caller)
    html = parts.html if parts and parts.html is not None else "<p>This mail has no HTML part.</p>"
    headers = {**HEADERS, "Content-Security-Policy": MAIL_CSP}
    return HTMLResponse(html, headers=headers)


@router.get("/{notification_id}/message")
async def notification_message(
    request: Request, notification_id: str, caller: ConsoleCaller
) -> Response:
    """The raw message as `GET /v1/notifications/{id}/message` gives it, as a download."""
    found = await _owned(request, notification_id, caller=caller)
    try:
        data = await actions.message_as_sent(_services(request), found, caller=caller)
    except HTTPException as exc:
        return await _page(request, found, caller=caller, error=str(exc.detail), code=409)
    disposition = f'attachment; filename="{found.id}.eml"'
    headers = {**HEADERS, "Content-Disposition": disposition}
    return Response(data, media_type="message/rfc822", headers=headers)


@router.post("/{notification_id}/cancel", dependencies=[CsrfChecked])
async def cancel(request: Request, notification_id: str, caller: ConsoleCaller) -> Response:
    return await _act(request, notification_id, caller=caller, action="cancel")


@router.post("/{notification_id}/retry", dependencies=[CsrfChecked])
async def retry(request: Request, notification_id: str, caller: ConsoleCaller) -> Response:
    return await _act(request, notification_id, caller=caller, action="retry")


async def _act(request: Request, notification_id: str, *, caller: Caller, action: str) -> Response:
    """Do `action` as the API would (its scope, its store method, its 404 and 409), then show
    the notification again: a redirect after success, the page with the reason after not."""
    found = await _owned(request, notification_id, caller=caller)
    scope = Scope.CANCEL if action == "cancel" else Scope.SEND
    if not caller.may(scope):
        error = f"The key of {caller.name!r} lacks the {scope.value!r} scope to {action}."
        return await _page(request, found, caller=caller, error=error, code=403)
    services = _services(request)
    background = None
    try:
        if action == "cancel":
            await actions.cancel(services, found.id, caller=caller)
        else:
            _, background = await actions.retry(services, found.id, caller=caller)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_404_NOT_FOUND:  # gone meanwhile
            raise NoSuchNotification(caller, notification_id) from None
        return await _page(
            request, found, caller=caller, error=str(exc.detail), code=exc.status_code
        )
    redirect = see_other(f"{router.prefix}/{found.id}?done={_DONE_AS[action]}")
    redirect.background = background
    return redirect


async def _page(
    request: Request,
    found: Notification,
    *,
    caller: Caller,
    notice: str | None = None,
    error: str | None = None,
    code: int = 200,
) -> Response:
    parts, unbuilt = await _parts(request, found, caller=caller)
    response = render(
        request,
        "notification.html",
        caller=caller,
        n=notification_view(found),
        parts=parts,
        unbuilt=unbuilt,
        sent=found.sent_at is not None,
        may_cancel=found.status in WAITING and caller.may(Scope.CANCEL),
        may_retry=found.status is Status.FAILED and caller.may(Scope.SEND),
        notice=notice,
        error=error,
    )
    response.status_code = code
    return response


async def _parts(
    request: Request, found: Notification, *, caller: Caller
) -> tuple[MailParts | None, str | None]:
    """The message's parts, or why there are none (not sent, and cannot be built now)."""
    try:
        data = await actions.message_as_sent(_services(request), found, caller=caller)
    except HTTPException as exc:
        return None, str(exc.detail)
    return mail_parts(data), None


async def _owned(request: Request, notification_id: str, *, caller: Caller) -> Notification:
    try:
        return await actions.owned(_services(request), notification_id, caller=caller)
    except HTTPException:
        raise NoSuchNotification(caller, notification_id) from None


class NoSuchNotification(Exception):
    """An unknown id, or another caller's: answered with the friendly 404 page
    (`not_found_page`, installed by app.console.routes)."""

    def __init__(self, caller: Caller, notification_id: str) -> None:
        self.caller = caller
        self.notification_id = notification_id


async def not_found_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NoSuchNotification)
    response = render(
        request, "not_found.html", caller=exc.caller, notification_id=exc.notification_id
    )
    response.status_code = status.HTTP_404_NOT_FOUND
    return response


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
