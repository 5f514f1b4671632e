"""How every console page is served: the signed-in caller (or a redirect to sign in), the CSRF
check of forms, and HTML rendered from app/console/templates with the headers every page gets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.callers import Caller, Scope
from app.api.deps import Services, get_services
from app.console.session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Signer,
    console_caller,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html

# Scripts only from our own origin, nothing framed from elsewhere, forms only to us. Styles may
# be inline: the mail previews (sandboxed srcdoc iframes, which inherit this policy) carry theirs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInNeeded(Exception):
    """A page asked for a caller and nobody is signed in: answered with a redirect to sign in."""

    def __init__(self, back_to: str) -> None:
        self.back_to = back_to


def signer_of(request: Request) -> Signer:
    signer: Signer = request.app.state.console_signer
    return signer


async def current_caller(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Caller:
    """The caller the console serves, if it may read; else a redirect to the sign-in page."""
    caller = console_caller(
        signer_of(request),
        auth=services.settings.auth,
        cookie=request.cookies.get(SESSION_COOKIE),
        keys=services.keys,
    )
    if caller is None or not caller.may(Scope.READ):
        raise SignInNeeded(_back_to(request))
    return caller


def _back_to(request: Request) -> str:
    """Where to come back after signing in: this page; for a form's POST (an action whose
    session had ended), the page it was on, since a GET of the action's URL means nothing."""
    path = request.url.path
    if request.method != "GET":
        page, _, _ = path.rpartition("/")
        return page if page.startswith("/console/notifications/") else "/console"
    query = request.url.query
    return path + (f"?{query}" if query else "")


ConsoleCaller = Annotated[Caller, Depends(current_caller)]


class StaleForm(Exception):
    """A form was posted without this browser's CSRF token: answered with a page (a 403) that
    says to reload, or for the page's own scripts (X-CSRF-Token) with JSON."""


STALE = "the form's CSRF token is missing or stale: reload the page and try again"
SIGNED_OUT = "not signed in, or the session ended: reload the page to sign in again"


async def check_csrf(request: Request) -> None:
    """Refuse a POST whose CSRF token (form field or header) is not this browser's."""
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    from_form = content_type.startswith(("application/x-www-form-urlencoded", "multipart/"))
    if sent is None and from_form:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    valid = signer_of(request).form_token_valid(
        sent,
        session=request.cookies.get(SESSION_COOKIE),
        csrf_cookie=request.cookies.get(CSRF_COOKIE),
    )
    if valid:
        return
    signed_out = _signed_out(request)  # a page whose session has ended: sign in again
    if not from_form:  # the page's own scripts: an answer they can show
        if signed_out:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, SIGNED_OUT)
        raise HTTPException(status.HTTP_403_FORBIDDEN, STALE)
    if signed_out:
        raise SignInNeeded(_back_to(request))
    raise StaleForm


def _signed_out(request: Request) -> bool:
    services: Services = request.app.state.services
    if services.settings.auth == "off" or request.url.path == "/console/sign-in":
        return False
    return not signer_of(request).has_session(request.cookies.get(SESSION_COOKIE))


CsrfChecked = Depends(check_csrf)


def render(request: Request, name: str, **context: Any) -> HTMLResponse:
    """The page `name` with `context`, plus what the layout needs: the caller (if any), whether
    auth is off, and the CSRF token for its forms (set as a cookie when new)."""
    services: Services = request.app.state.services
    signer = signer_of(request)
    token, fresh = signer.form_token(
        session=request.cookies.get(SESSION_COOKIE), csrf_cookie=request.cookies.get(CSRF_COOKIE)
    )
    response = templates.TemplateResponse(
        request,
        name,
        {"auth_off": services.settings.auth == "off", "csrf_token": token, **context},
        headers=HEADERS,
    )
    if fresh:
        set_cookie(request, response, CSRF_COOKIE, token, max_age=signer.max_age)
    return response


def set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER, headers=HEADERS)


def sign_in_redirect(back_to: str) -> RedirectResponse:
    return see_other(f"/console/sign-in?next={quote(back_to, safe='')}")
