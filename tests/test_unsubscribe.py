"""One-click unsubscribe (RFC 8058): the signed token, the List-Unsubscribe headers of the sent
mail (parsed with the `email` package), and the /u/ pages, on both databases."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.unsubscribe import Subscription, sign, verify
from tests.conftest import BOTH_BACKENDS, WELCOME
from tests.smtp_server import SmtpServer
from tests.test_delivery import reaches, service

SECRET = "s" * 32
PUBLIC_URL = "https://notify.example.com/mail"
LINKS = {"public_url": PUBLIC_URL + "/", "unsubscribe_secret": SECRET}
NEWSLETTER = {**WELCOME, "category": "newsletter"}
_LINK = re.compile(r"<(https://notify\.example\.com/mail/u/([A-Za-z0-9_.-]+))>")

texts = st.text(min_size=1, max_size=80)


@given(caller=texts, category=texts, address=texts)
def test_any_subscription_round_trips_through_its_token(
    caller: str, category: str, address: str
) -> None:
    token = sign(SECRET.encode(), Subscription(caller, category, address))
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert verify(SECRET.encode(), token) == Subscription(caller, category, address.lower())


@given(
    subscription=st.builds(Subscription, texts, texts, texts),
    position=st.integers(min_value=0),
    replacement=st.characters(codec="ascii"),
)
def test_any_change_to_a_token_is_refused(
    subscription: Subscription, position: int, replacement: str
) -> None:
    token = sign(SECRET.encode(), subscription)
    index = position % len(token)
    changed = token[:index] + replacement + token[index + 1 :]
    assume(changed != token)
    assert verify(SECRET.encode(), changed) is None
    assert verify(SECRET.encode(), token[:index]) is None
    assert verify(SECRET.encode(), token + replacement) is None


@given(subscription=st.builds(Subscription, texts, texts, texts), other=st.binary(min_size=1))
def test_a_token_signed_with_another_secret_is_refused(
    subscription: Subscription, other: bytes
) -> None:
    assume(other != SECRET.encode())
    assert verify(SECRET.encode(), sign(other, subscription)) is None


async def sent_link(client: httpx.AsyncClient, smtp: SmtpServer, request: dict[str, Any]) -> str:
    response = await client.post("/v1/notifications", json=request)
    assert response.status_code == 202, response.text
    await reaches(client, response.headers["location"], "sent")
    message = smtp.messages[-1].message
    match = _LINK.fullmatch(str(message["List-Unsubscribe"]))
    assert match, message["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return urlsplit(match.group(1)).path  # /mail/u/<token>


def local(path: str) -> str:
    """The service runs at the root here; PUBLIC_URL's /mail is the proxy's prefix."""
    return path.removeprefix("/mail")


@BOTH_BACKENDS
async def test_one_click_unsubscribes_that_address_from_that_category_only(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    async with service(tmp_path, smtp, database_url=database_url, **LINKS) as client:
        path = local(await sent_link(client, smtp, NEWSLETTER))
        assert (await client.get("/v1/suppressions")).json()["items"] == []

        page = await client.get(path)  # a mail scanner following the link changes nothing
        assert page.status_code == 200
        assert '<form method="post">' in page.text and "ada@example.com" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert (await client.get("/v1/suppressions")).json()["items"] == []

        for _ in range(2):  # idempotent
            done = await client.post(path, content=b"List-Unsubscribe=One-Click")
            assert done.status_code == 200 and "newsletter" in done.text
        [entry] = (await client.get("/v1/suppressions")).json()["items"]
        assert (entry["address"], entry["category"], entry["reason"]) == (
            "ada@example.com",
            "newsletter",
            "unsubscribe",
        )
        skipped = await client.post("/v1/notifications", json=NEWSLETTER)
        assert skipped.json()["suppressed"] == [
            {"email": "ada@example.com", "reason": "unsubscribe"}
        ]
        await reaches(client, skipped.headers["location"], "suppressed")
        await sent_link(client, smtp, {**WELCOME, "category": "billing"})
        plain = await client.post("/v1/notifications", json=WELCOME)
        await reaches(client, plain.headers["location"], "sent")
    assert "List-Unsubscribe" not in smtp.messages[-1].message  # no category, no link


async def test_the_token_of_one_address_cannot_unsubscribe_another(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, **LINKS) as client:
        path = local(await sent_link(client, smtp, NEWSLETTER))
        token = path.rsplit("/", 1)[1]
        payload, mac = token.split(".")
        bob = sign(b"x", Subscription("anonymous", "newsletter", "bob@example.com"))
        forged = [
            f"{bob.split('.')[0]}.{mac}",  # bob's payload under ada's signature
            bob,  # signed with another secret
            f"{payload}.{mac[:-1]}",
            "nonsense",
        ]
        for candidate in forged:
            assert (await client.post(f"/u/{candidate}")).status_code == 404
            assert (await client.get(f"/u/{candidate}")).status_code == 404
        assert (await client.get("/v1/suppressions")).json()["items"] == []


async def test_the_pages_need_no_key_and_keep_the_body_limit(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = {**LINKS, "api_keys": "web:web-secret-2", "max_body_bytes": 1024}
    token = sign(SECRET.encode(), Subscription("web", "newsletter", "ada@example.com"))
    async with service(tmp_path, smtp, **settings) as client:
        assert (await client.get(f"/u/{token}")).status_code == 200
        assert (await client.post(f"/u/{token}", content=b"x" * 2048)).status_code == 413
        assert (await client.post(f"/u/{token}")).status_code == 200
        listed = await client.get(
            "/v1/suppressions", headers={"Authorization": "Bearer web-secret-2"}
        )
        assert [e["caller"] for e in listed.json()["items"]] == ["web"]


@pytest.mark.parametrize("missing", ["public_url", "unsubscribe_secret"])
async def test_without_public_url_or_secret_no_header_no_page_and_a_start_up_note(
    tmp_path: Path, smtp: SmtpServer, missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {k: v for k, v in LINKS.items() if k != missing}
    token = sign(SECRET.encode(), Subscription("anonymous", "newsletter", "ada@example.com"))
    async with service(tmp_path, smtp, **settings) as client:
        response = await client.post("/v1/notifications", json=NEWSLETTER)
        await reaches(client, response.headers["location"], "sent")
        assert (await client.post(f"/u/{token}")).status_code == 404
    assert "List-Unsubscribe" not in smtp.messages[0].message
    log = capsys.readouterr().err
    assert "unsubscribe.disabled" in log and missing.upper() in log
    assert SECRET not in log


async def test_mail_to_several_recipients_carries_no_link(tmp_path: Path, smtp: SmtpServer) -> None:
    request = {**NEWSLETTER, "cc": ["bob@example.com"]}
    async with service(tmp_path, smtp, **LINKS) as client:
        response = await client.post("/v1/notifications", json=request)
        await reaches(client, response.headers["location"], "sent")
    assert "List-Unsubscribe" not in smtp.messages[0].message


async def test_the_downloaded_message_carries_the_link_as_sent(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, **LINKS) as client:
        path = await sent_link(client, smtp, NEWSLETTER)
        [item] = (await client.get("/v1/notifications")).json()["items"]
        raw = await client.get(f"/v1/notifications/{item['id']}/message")
    assert f"List-Unsubscribe: <https://notify.example.com{path}>".encode() in raw.content
