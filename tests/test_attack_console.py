"""An attacker's review of the console (issue 12): inputs a hostile caller controls, sessions
and CSRF tokens used where they should not work, and what a key may learn of others.

The stores, the SMTP server and the app are real; 500s are read
from the app's answer (`raise_app_exceptions=False`), as a browser would see them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from app.api.callers import Caller
from app.console.filters import FilterProblem, read_listing
from app.main import create_app
from tests.conftest import WELCOME, make_settings
from tests.console import csrf_in, sign_in
from tests.keys import bearer, table, write_keys
from tests.smtp_server import SmtpServer

SHOP = "shop-secret-key-000001"
NARROW = "narrow-secret-key-0001"  # may use the welcome template only
_OPTION = re.compile(r'<option value="([a-z0-9_-]+)">')


def keys(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.toml",
        table("shop", SHOP),
        table("narrow", NARROW, templates=["welcome"]),
    )


@asynccontextmanager
async def serving(
    tmp_path: Path, smtp: SmtpServer, **settings: Any
) -> AsyncIterator[httpx.ASGITransport]:
    """The app; an error inside it is its 500, as a browser sees it, not an exception."""
    application = create_app(
        make_settings(tmp_path, smtp.port, api_keys_file=keys(tmp_path), **settings)
    )
    async with application.router.lifespan_context(application):
        yield httpx.ASGITransport(app=application, raise_app_exceptions=False)


def browser(transport: httpx.ASGITransport) -> httpx.AsyncClient:
    """One browser: its own cookies."""
    return httpx.AsyncClient(transport=transport, base_url="http://console.test")


@asynccontextmanager
async def console(
    tmp_path: Path, smtp: SmtpServer, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tmp_path, smtp, **settings) as transport, browser(transport) as client:
        yield client


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def test_a_limit_of_thousands_of_digits_is_named_not_a_server_error(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # fixed: int() of over 4300 digits raised its own ValueError, a 500
    async with console(tmp_path, smtp) as client:
        await sign_in(client, SHOP)
        for path in ("/console", "/console/rows"):
            answer = await client.get(path, params={"limit": "9" * 4301})
            assert answer.status_code == 400, (path, answer.text[:200])
        page = await client.get("/console", params={"limit": "9" * 4301})
        assert "limit: a whole number from 1 to 200" in page.text


@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A[0-9]{1,6000}\Z")))
def test_any_limit_is_read_or_named(text: str) -> None:
    params = QueryParams({"limit": text})
    try:
        listing = read_listing(params, caller=Caller(name="shop"))
    except FilterProblem as problem:
        assert problem.name == "limit"
    else:
        assert 1 <= listing.limit <= 200


async def test_the_template_suggestions_are_only_those_the_key_may_use(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # fixed: the activity page's <datalist> named every template, which GET /v1/templates and
    # the gallery keep from a key limited to some
    async with console(tmp_path, smtp) as client:
        await sign_in(client, NARROW)
        page = await client.get("/console")
        assert _OPTION.findall(page.text) == ["welcome"]
        listed = await client.get("/v1/templates", headers=bearer(NARROW))
        assert [t["name"] for t in listed.json()] == ["welcome"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "path",
    [
        "/console/notifications/a%00b",
        "/console/notifications/a%00b/progress",
        "/console/notifications/a%00b/html",
        "/console/notifications/a%00b/message",
        "/console?tag=a%00b",
        "/console/rows?template=a%00b",
        "/console?cursor=" + cursor("1.0|\x00"),
        "/v1/notifications/a%00b",
        "/v1/notifications?tag=a%00b",
    ],
)
async def test_a_nul_in_an_id_or_filter_is_no_server_error_on_postgres(
    tmp_path: Path, smtp: SmtpServer, database_url: str, path: str
) -> None:
    async with console(tmp_path, smtp, database_url=database_url) as client:
        await sign_in(client, SHOP)
        answer = await client.get(path, headers=bearer(SHOP) if path.startswith("/v1") else {})
        assert answer.status_code in (400, 404, 422), answer.status_code


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("action", ["retry", "cancel"])
async def test_a_nul_in_an_actions_id_is_no_server_error_on_postgres(
    tmp_path: Path, smtp: SmtpServer, database_url: str, action: str
) -> None:
    async with console(tmp_path, smtp, database_url=database_url) as client:
        await sign_in(client, SHOP)
        token = csrf_in((await client.get("/console")).text)
        answer = await client.post(f"/console/notifications/a%00b/{action}", data={"csrf": token})
        assert answer.status_code in (400, 404), answer.status_code


async def test_a_csrf_token_from_another_browser_does_not_pass_for_this_session(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with serving(tmp_path, smtp) as transport, browser(transport) as victim:
        sent = await victim.post("/v1/notifications", json=WELCOME, headers=bearer(SHOP))
        notification_id = sent.json()["id"]
        await sign_in(victim, SHOP)
        # the attacker's own visit to the sign-in page: a valid token, and no session
        async with browser(transport) as attacker:
            token = csrf_in((await attacker.get("/console/sign-in")).text)
        # a sibling subdomain (same site: SameSite=Strict lets it post) sets the cookie to it
        victim.cookies.set("notifier_csrf", token, domain="console.test", path="/console")
        forged = await victim.post(
            f"/console/notifications/{notification_id}/cancel", data={"csrf": token}
        )
        # 403 is the CSRF check's; a 303 (cancelled) or 409 (sent already) means it passed
        assert forged.status_code == 403, forged.status_code


async def test_an_action_after_the_session_ended_leads_back_to_its_page_after_sign_in(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp) as client:
        sent = await client.post("/v1/notifications", json=WELCOME, headers=bearer(SHOP))
        notification_id = sent.json()["id"]
        await sign_in(client, SHOP)
        page = await client.get(f"/console/notifications/{notification_id}")
        # the session ends (key removed and put back, a restart with another CONSOLE_SECRET,
        # expiry) while the page stays open; the CSRF cookie is still good
        client.cookies.delete("notifier_session", domain="console.test", path="/console")
        pressed = await client.post(
            f"/console/notifications/{notification_id}/cancel", data={"csrf": csrf_in(page.text)}
        )
        assert pressed.status_code == 303
        sign_in_page = await client.get(pressed.headers["location"])
        back = await client.post(
            "/console/sign-in",
            data={
                "key": SHOP,
                "csrf": csrf_in(sign_in_page.text),
                "next": _next_of(pressed.headers["location"]),
            },
        )
        landed = await client.get(back.headers["location"])
        assert landed.status_code == 200, (back.headers["location"], landed.status_code)


def _next_of(location: str) -> str:
    found = re.search(r"next=([^&]+)", location)
    assert found
    return httpx.URL("/?next=" + found.group(1)).params["next"]
