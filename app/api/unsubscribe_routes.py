"""One-click unsubscribe (RFC 8058): the links in List-Unsubscribe, outside /v1.

`POST /u/{token}` unsubscribes: mail clients send it (List-Unsubscribe-Post) without a cookie or
a key, so the token alone says who and from what (`app.unsubscribe`); repeating it changes
nothing. `GET /u/{token}` only shows a page with one button that POSTs: mail scanners follow
links, and must not unsubscribe anyone by doing so. No API key is asked (the admission layer
authenticates /v1 only) but the body limit holds as everywhere.
"""

from __future__ import annotations

import logging
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import ServicesDep
from app.delivery.compose import unsubscribe_links
from app.ops.logs import event
from app.store.records import Suppression
from app.unsubscribe import Subscription, verify

log = logging.getLogger("app.api.unsubscribe")

router = APIRouter(prefix="/u", tags=["unsubscribe"])

# The token is in the address: keep it out of caches, referrers and frames.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body></html>
"""
_NOT_VALID = (
    "<p>This unsubscribe link is not valid. Copy the whole link from the message, or reply to"
    " the sender.</p>"
)


@router.get("/{token}", response_class=HTMLResponse, responses={404: {"description": "Not ours."}})
async def confirm_page(token: str, services: ServicesDep) -> HTMLResponse:
    """A page with one button, which POSTs to this address; nothing changes on GET."""
    subscription = _subscription(services, token)
    if subscription is None:
        return _page("Link not valid", _NOT_VALID, status=404)
    body = (
        f"<p>Stop receiving <strong>{escape(subscription.category)}</strong> mail at"
        f" <strong>{escape(subscription.address)}</strong>?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body)


@router.post("/{token}", response_class=HTMLResponse, responses={404: {"description": "Not ours."}})
async def unsubscribe(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Unsubscribe the address the token names from its category (idempotent)."""
    del request  # the body (List-Unsubscribe=One-Click) says nothing the token does not
    subscription = _subscription(services, token)
    if subscription is None:
        return _page("Link not valid", _NOT_VALID, status=404)
    s = subscription
    await services.store.suppress(
        [Suppression(caller=s.caller, address=s.address, reason="unsubscribe", category=s.category)]
    )
    services.suppression_hint.added(s.caller)
    # no address in the log: the caller and category say enough to follow it
    event(log, "suppression.unsubscribed", caller=s.caller, category=s.category)
    body = (
        f"<p>{escape(s.address)} will receive no more <strong>{escape(s.category)}</strong>"
        " mail from us.</p>"
    )
    return _page("Unsubscribed", body)


def _subscription(services: ServicesDep, token: str) -> Subscription | None:
    links = unsubscribe_links(services.settings)
    return None if links is None else verify(links.secret, token)


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=escape(title), body=body), status_code=status, headers=_HEADERS
    )
