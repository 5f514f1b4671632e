"""The activity page and a notification's page in a real browser (the system's Chromium),
against a real uvicorn process and the aiosmtpd server: statuses change on the page while mail
is sent, filters narrow the list, a 550 shows on the notification's page and a retry sends it,
the mail's HTML renders in its sandbox without running its scripts, the download is a message,
cancel works, a form without its CSRF token and another caller's notification do not.

Screenshots of each page go to the folder pytest prints at the end (tests/browser.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import shoot
from tests.conftest import WELCOME
from tests.keys import bearer, table, write_keys
from tests.live import ROOT, Live, running, service_env, uvicorn_command
from tests.postgres import free_port
from tests.smtp_server import SmtpServer

SHOP = "shop-secret-key-000001"
WEB = "web-secret-key-0000001"
REFUSED = "550 5.1.1 no such user"
# the mail's HTML tries to change #probe twice: an inline script and an onerror handler
SCRIPTED_HTML = """<h1 id="greeting">Hello {{ name }}</h1>
<p id="probe">static</p>
<script>document.getElementById("probe").textContent = "ran";</script>
<img src="data:," alt="" onerror="document.getElementById('probe').textContent = 'ran'">
"""
pytestmark = pytest.mark.slow  # each starts a service and a browser: several seconds


def templates(tmp_path: Path) -> Path:
    """The shipped templates, and one whose HTML would run scripts if it were let."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    scripted = folder / "scripted"
    scripted.mkdir()
    (scripted / "subject.txt").write_text("Scripted for {{ name }}")
    (scripted / "body.txt").write_text("Hello {{ name }}")
    (scripted / "body.html").write_text(SCRIPTED_HTML)
    return folder


@asynccontextmanager
async def service(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[tuple[Live, str]]:
    keys = write_keys(tmp_path / "keys.toml", table("shop", SHOP), table("web", WEB))
    env = service_env(
        tmp_path,
        smtp.port,
        API_KEYS_FILE=str(keys),
        TEMPLATES_DIR=str(templates(tmp_path)),
        POLL_INTERVAL="0.2",
    )
    port = free_port()
    command = uvicorn_command(port)
    async with running(command, env=env, port=port, log=tmp_path / "service.log") as live:
        yield live, f"http://127.0.0.1:{port}"


async def send(live: Live, request: dict[str, Any], *, key: str = SHOP) -> str:
    response = await live.client.post("/v1/notifications", json=request, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def in_seconds(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


async def signed_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/console/sign-in")
    await page.fill("#key", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/console")


async def shoot_with_mail(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot that shows the mail too: Chromium paints a frame of another
    origin (the sandbox's) only where the viewport is, so the viewport is the page's height."""
    before = page.viewport_size
    assert before is not None
    height = await page.evaluate("document.documentElement.scrollHeight")
    await page.set_viewport_size({"width": before["width"], "height": height})
    await page.frame_locator("iframe.mail").locator("body").wait_for()
    await page.evaluate(
        "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )
    await shoot(page, folder, name)
    await page.set_viewport_size(before)


def badge(page: Page, notification_id: str) -> Any:
    return page.locator(f'tr[data-id="{notification_id}"] .badge')


async def test_statuses_change_live_filters_narrow_and_a_failed_one_is_retried(
    tmp_path: Path, smtp: SmtpServer, page: Page, screenshots: Path
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = REFUSED
    async with service(tmp_path, smtp) as (live, base):
        await signed_in(page, base, SHOP)
        # due a few seconds from now: the page is open before any of them is tried
        due = in_seconds(6)
        sent = [await send(live, {**WELCOME, "send_at": due}) for _ in range(2)]
        failed = await send(live, {**WELCOME, "to": ["bob@example.com"], "send_at": due})
        await page.goto(f"{base}/console")
        await page.evaluate("window.notReloaded = true")
        for notification in (*sent, failed):
            await expect(badge(page, notification)).to_have_text("scheduled")
        # the poll brings the outcomes into the same page
        for notification in sent:
            await expect(badge(page, notification)).to_have_text("sent", timeout=20_000)
        await expect(badge(page, failed)).to_have_text("failed", timeout=20_000)
        assert await page.evaluate("window.notReloaded") is True
        await expect(page.locator(f'tr[data-id="{failed}"] .last-error')).to_contain_text("550")
        await shoot(page, screenshots, "activity")

        await page.fill("#f-recipient", "bob@example.com")
        await page.click(".filters button[type=submit]")
        await expect(page.locator("#rows tr")).to_have_count(1)
        await expect(badge(page, failed)).to_have_text("failed")
        await page.select_option("#f-status", "sent")
        await page.fill("#f-recipient", "")
        await page.click(".filters button[type=submit]")
        await expect(page.locator("#rows tr[data-id]")).to_have_count(2)

        await page.goto(f"{base}/console/notifications/{failed}")
        attempt = page.locator("#attempts .attempt")
        await expect(attempt).to_have_count(1)
        await expect(attempt.locator(".code")).to_have_text("550")
        await expect(attempt).to_contain_text("bob@example.com: refused (550 5.1.1 no such user)")
        await shoot_with_mail(page, screenshots, "notification-failed")

        smtp.behaviour.refuse.clear()
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#retry")
        await page.wait_for_url(f"**/console/notifications/{failed}?done=retried")
        await expect(page.locator("#status")).to_have_text("sent", timeout=20_000)
        await expect(page.locator("#attempts .attempt")).to_have_count(2)
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [
        "ada@example.com",
        "ada@example.com",
        "bob@example.com",
    ]


async def test_the_message_page_sandboxes_downloads_cancels_and_keeps_to_its_caller(
    tmp_path: Path, smtp: SmtpServer, browser: Browser, page: Page, screenshots: Path
) -> None:
    async with service(tmp_path, smtp) as (live, base):
        scripted = await send(
            live,
            {"template": "scripted", "to": ["carol@example.com"], "context": {"name": "Carol"}},
        )
        later = await send(live, {**WELCOME, "send_at": in_seconds(3600)})
        await signed_in(page, base, SHOP)
        await page.goto(f"{base}/console/notifications/{scripted}")
        await expect(page.locator("#status")).to_have_text("sent", timeout=20_000)
        await page.reload()  # the message part of the page shows what was sent
        mail = page.frame_locator("iframe.mail")
        await expect(mail.locator("#greeting")).to_have_text("Hello Carol")
        await expect(mail.locator("#probe")).to_have_text("static")
        served = await page.request.get(f"{base}/console/notifications/{scripted}/html")
        assert "<script>" in await served.text()  # it was there, and did not run
        await expect(page.locator("#text-part")).to_have_text("Hello Carol")
        await expect(page.locator("#headers")).to_contain_text("Scripted for Carol")
        await shoot_with_mail(page, screenshots, "notification-sent")

        async with page.expect_download() as downloading:
            await page.click("#download")
        download = await downloading.value
        saved = tmp_path / "downloaded.eml"
        await download.save_as(saved)
        raw = saved.read_bytes()
        message = message_from_bytes(raw, policy=policy.default)
        assert message["Subject"] == "Scripted for Carol" and not message.defects
        (received,) = smtp.messages
        assert raw == received.data

        await page.goto(f"{base}/console/notifications/{later}")
        refused = await page.request.post(
            f"{base}/console/notifications/{later}/cancel", form={}, max_redirects=0
        )
        assert refused.status == 403 and "CSRF" in await refused.text()
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#cancel")
        await page.wait_for_url(f"**/console/notifications/{later}?done=cancelled")
        await expect(page.locator("#status")).to_have_text("cancelled")

        await page.set_viewport_size({"width": 375, "height": 800})
        await page.goto(f"{base}/console")
        await expect(page.locator("#rows tr[data-id]")).to_have_count(2)
        await shoot(page, screenshots, "activity-375")

        other = await browser.new_context()
        try:
            theirs = await other.new_page()
            await signed_in(theirs, base, WEB)
            answer = await theirs.goto(f"{base}/console/notifications/{scripted}")
            assert answer is not None and answer.status == 404
            await expect(theirs.locator("h1")).to_have_text("No such notification")
            await expect(theirs.locator("#rows tr.empty")).to_have_count(0)
            await theirs.goto(f"{base}/console")
            await expect(theirs.locator("#rows tr[data-id]")).to_have_count(0)
        finally:
            await other.close()
