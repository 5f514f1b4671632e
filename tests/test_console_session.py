"""Signing in to the console: a signed session cookie for a key with `read`, CSRF on every form,
sign-out, and no way to be sent off the console by a sign-in link."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import Page

from app.console.routes import _local
from tests.browser import shoot
from tests.console import console, csrf_in, sign_in
from tests.keys import table, write_keys
from tests.live import running, service_env
from tests.postgres import free_port
from tests.smtp_server import SmtpServer

READER = "reader-secret-key-0001"
SENDER = "sender-secret-key-0001"


def keys(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.toml",
        table("support", READER, scopes=["read"]),
        table("mailer", SENDER, scopes=["send"]),
    )


async def test_pages_send_whoever_is_not_signed_in_to_sign_in(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        answer = await client.get("/console/templates?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/sign-in?next=" + quote(
            "/console/templates?x=1", safe=""
        )


async def test_a_read_key_signs_in_with_a_strict_httponly_cookie_that_is_not_the_key(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        answer = await sign_in(client, READER)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/console"
        cookie = next(
            v for k, v in answer.headers.multi_items() if k == "set-cookie" and "session" in v
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Max-Age=43200" in cookie
        assert READER not in cookie
        page = await client.get("/console")
        assert page.status_code == 200
        assert "Signed in as <strong>support</strong>" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_wrong_keys_and_keys_without_read_do_not_sign_in(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(
        tmp_path, smtp, api_keys_file=keys(tmp_path), auth_failure_limit="2/minute"
    ) as client:
        lacking = await sign_in(client, SENDER)
        assert lacking.status_code == 403 and "lacks the &#39;read&#39; scope" in lacking.text
        wrong = await sign_in(client, "not-a-key-at-all")
        assert wrong.status_code == 401 and "not one of this service" in wrong.text
        assert "not-a-key-at-all" not in wrong.text
        await sign_in(client, "not-a-key-at-all")
        throttled = await sign_in(client, "not-a-key-at-all")
        assert throttled.status_code == 429
        assert (await client.get("/console")).status_code == 303


async def test_forms_without_the_csrf_token_are_refused(tmp_path: Path, smtp: SmtpServer) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        page = await client.get("/console/sign-in")
        token = csrf_in(page.text)
        for sent in ({}, {"csrf": "forged"}, {"csrf": token + "x"}):
            refused = await client.post("/console/sign-in", data={"key": READER, **sent})
            assert refused.status_code == 403, sent
            assert "This form has expired" in refused.text
        assert (await sign_in(client, READER)).status_code == 303
        signed_in = await client.get("/console")
        assert (await client.post("/console/sign-out", data={})).status_code == 403
        assert (await client.get("/console")).status_code == 200
        out = await client.post("/console/sign-out", data={"csrf": csrf_in(signed_in.text)})
        assert out.status_code == 303
        assert (await client.get("/console")).status_code == 303


async def test_a_forged_session_cookie_is_no_session(tmp_path: Path, smtp: SmtpServer) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        client.cookies.set("notifier_session", "eyJrZXkiOiJ4In0.forged.sig", path="/console")
        assert (await client.get("/console")).status_code == 303


async def test_with_auth_off_the_console_opens_and_says_so(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp) as client:
        page = await client.get("/console")
        assert page.status_code == 200
        assert "Authentication is off" in page.text
        assert (await client.get("/console/sign-in")).status_code == 303


@given(st.text(max_size=60))
def test_sign_in_only_ever_sends_back_within_the_console(next_url: str) -> None:
    target = _local(next_url)
    assert target.startswith("/console") and not target.startswith("//")
    assert "\\" not in target


async def test_signing_in_in_a_real_browser(
    tmp_path: Path, smtp: SmtpServer, page: Page, screenshots: Path
) -> None:
    port = free_port()
    env = service_env(tmp_path, smtp.port, API_KEYS_FILE=str(keys(tmp_path)))
    command = ["uvicorn", "app.main:app", "--port", str(port)]
    async with running(command, env=env, port=port, log=tmp_path / "service.log"):
        await page.goto(f"http://127.0.0.1:{port}/console")
        assert page.url.endswith("/console/sign-in?next=%2Fconsole")
        await shoot(page, screenshots, "sign-in")
        await page.fill("#key", READER)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"http://127.0.0.1:{port}/console")
        assert "support" in await page.inner_text("header")
        await page.click("text=Sign out")
        await page.wait_for_url("**/console/sign-in")
