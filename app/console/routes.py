"""The console's own routes: its assets, signing in and out. The pages are in
app.console.activity, app.console.notification and app.console.gallery; `add_console` puts
them all on the application."""

from __future__ import annotations

import posixpath
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request, status
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from app.api.callers import Scope
from app.api.deps import ServicesDep
from app.console.pages import (
    HERE,
    CsrfChecked,
    SignInNeeded,
    StaleForm,
    render,
    see_other,
    set_cookie,
    sign_in_redirect,
    signer_of,
)
from app.console.session import SESSION_COOKIE, Signer
from app.settings import Settings

router = APIRouter(prefix="/console", include_in_schema=False)

HOME = "/console"


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, services: ServicesDep, next: str = HOME) -> Response:
    if services.settings.auth == "off":
        return see_other(_local(next))
    return render(request, "sign_in.html", next=_local(next), error=None)


@router.post("/sign-in", dependencies=[CsrfChecked], response_class=HTMLResponse)
async def sign_in(
    request: Request,
    services: ServicesDep,
    key: Annotated[str, Form(max_length=4096)],
    next: Annotated[str, Form(max_length=2048)] = HOME,
) -> Response:
    """Exchange an API key with the `read` scope for a session cookie."""
    back_to = _local(next)
    caller = services.keys.identify(key.strip()) if services.settings.auth == "on" else None
    if services.settings.auth == "off":
        return see_other(back_to)
    if caller is None:
        wait = await services.auth_throttle.failed(request.scope)
        error = (
            f"Too many failed sign-ins from this address; try again in {wait:.0f} s."
            if wait
            else "That key is not one of this service's keys."
        )
        code = status.HTTP_429_TOO_MANY_REQUESTS if wait else status.HTTP_401_UNAUTHORIZED
        response = render(request, "sign_in.html", next=back_to, error=error)
        response.status_code = code
        return response
    if not caller.may(Scope.READ):
        response = render(
            request,
            "sign_in.html",
            next=back_to,
            error=f"The key of {caller.name!r} lacks the 'read' scope the console needs.",
        )
        response.status_code = status.HTTP_403_FORBIDDEN
        return response
    signer = signer_of(request)
    redirect = see_other(back_to)
    cookie = signer.session_cookie(key.strip())
    set_cookie(request, redirect, SESSION_COOKIE, cookie, max_age=signer.max_age)
    return redirect


@router.post("/sign-out", dependencies=[CsrfChecked])
async def sign_out(request: Request) -> Response:
    response = see_other("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


def _local(url: str) -> str:
    """Only a path within the console: a sign-in link must not send anyone elsewhere, nor
    out of /console by dot segments."""
    path, sep, query = url.partition("?")
    if "\\" in url or not path.startswith("/"):
        return HOME
    path = posixpath.normpath(path)
    if path != HOME and not path.startswith(HOME + "/"):
        return HOME
    return path + sep + query


def add_console(app: FastAPI, settings: Settings) -> None:
    # the pages; they import this module's helpers
    from app.console import activity, gallery, notification

    app.state.console_signer = Signer.from_settings(settings)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(router)
    app.include_router(activity.router)
    app.include_router(gallery.router)
    app.include_router(notification.router)

    async def to_sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeeded)
        return sign_in_redirect(exc.back_to)

    async def stale_form(request: Request, exc: Exception) -> Response:
        response = render(request, "stale_form.html", caller=None)
        response.status_code = status.HTTP_403_FORBIDDEN
        return response

    app.add_exception_handler(SignInNeeded, to_sign_in)
    app.add_exception_handler(StaleForm, stale_form)
    app.add_exception_handler(notification.NoSuchNotification, notification.not_found_page)
