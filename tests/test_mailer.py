"""What reaches a real SMTP server: message shape, envelope, TLS and AUTH."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
import trustme
from fastapi import FastAPI

from app.delivery.smtp_session import command_path
from app.main import create_app
from tests.conftest import WELCOME, make_settings, wait_for
from tests.smtp_server import SmtpServer, mailboxes

FULL: dict[str, Any] = {
    **WELCOME,
    "to": ["Ada Lovelace <ada@example.com>", {"email": "zoë@example.com", "name": "Zoë Ünal"}],
    "cc": ["Charles Babbage <charles@example.com>"],
    "bcc": ["secret-auditor@example.com"],
    "subject": "Grüße, ваш заказ ✓",
    "headers": {"X-Campaign": "onboarding", "X-User-Id": "42"},
}


async def send(client: httpx.AsyncClient, smtp: SmtpServer, request: dict[str, Any]) -> None:
    assert (await client.post("/v1/notifications", json=request)).status_code == 202
    await wait_for(lambda: len(smtp.messages) == 1)


async def test_to_cc_and_bcc_all_receive_it(client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    await send(client, smtp, FULL)
    assert sorted(smtp.messages[0].rcpt_tos) == [
        "ada@example.com",
        "charles@example.com",
        "secret-auditor@example.com",
        "zoë@example.com",
    ]


async def test_bcc_is_not_in_any_header(client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    await send(client, smtp, FULL)
    raw = smtp.messages[0].data
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"secret-auditor" not in headers
    assert b"secret-auditor" not in raw
    assert "Bcc" not in smtp.messages[0].message


async def test_message_has_text_and_html_parts_and_utf8_survives(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await send(client, smtp, FULL)
    message = smtp.messages[0].message

    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "Welcome, Ada!" in text.get_content()
    assert "style=" in html.get_content()
    assert message["Subject"] == "Grüße, ваш заказ ✓"
    assert message["To"].addresses[1].display_name == "Zoë Ünal"
    assert message["Cc"] == "Charles Babbage <charles@example.com>"
    assert message["X-Campaign"] == "onboarding" and message["X-User-Id"] == "42"
    assert message["Date"] is not None and message["Message-ID"].endswith("@example.com>")


async def test_idn_domain_goes_out_as_punycode(client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    await send(client, smtp, {**WELCOME, "to": ["Ada <ada@bücher.example>"]})
    assert smtp.messages[0].rcpt_tos == ["ada@xn--bcher-kva.example"]
    assert smtp.messages[0].message["To"].addresses[0].domain == "xn--bcher-kva.example"


async def test_idn_domain_is_converted_by_idna_2008_not_2003(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    # IDNA 2003 (Python's "idna" codec) maps faß.de to fass.de: another domain
    await send(client, smtp, {**WELCOME, "to": ["Ada <ada@faß.de>"]})
    assert smtp.messages[0].rcpt_tos == ["ada@xn--fa-hia.de"]
    assert smtp.messages[0].message["To"].addresses[0].domain == "xn--fa-hia.de"


async def test_utf8_reply_to_alone_makes_the_message_smtputf8(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await send(client, smtp, {**WELCOME, "reply_to": "josé@example.com"})
    received = smtp.messages[0]
    assert "SMTPUTF8" in received.mail_options
    assert received.message["Reply-To"].addresses[0].username == "josé"


async def test_no_line_is_longer_than_998_octets_and_everything_reads_back(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    """A strict server (ours refuses longer lines, as Postfix does) takes the mail: a subject
    rendered from 5000 characters, long unbroken words in headers and names, and a 255
    characters non-ASCII file name in RFC 2231 sections."""
    request = {
        **WELCOME,
        "to": [{"email": "ada@example.com", "name": "Ä" * 200}],
        "cc": [{"email": "charles@example.com", "name": "B" * 200}],
        "context": {"name": "A" * 5000, "action_url": "https://example.com/" + "p" * 3000},
        "headers": {"X-Long": "x" * 900, "X-Words": "word " * 179 + "end"},
        "attachments": [{"filename": "€" * 255, "content_type": "text/plain", "content": "aGk="}],
    }
    await send(client, smtp, request)
    received = smtp.messages[0]
    assert max(map(len, received.data.split(b"\r\n"))) <= 998
    assert b"filename*0*=utf-8''%E2%82%AC" in received.data and b"filename*1*=" in received.data
    message = received.message
    assert message["Subject"] == f"Welcome aboard, {'A' * 5000}!"
    assert mailboxes(message, "To") == [("Ä" * 200, "ada@example.com")]
    assert mailboxes(message, "Cc") == [("B" * 200, "charles@example.com")]
    assert message["X-Long"] == "x" * 900 and message["X-Words"] == "word " * 179 + "end"
    [attached] = [part for part in message.iter_attachments()]
    assert attached.get_filename() == "€" * 255


async def test_text_that_looks_like_an_encoded_word_reads_back_literally(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    trap = "=?UTF-8?Q?=0ABcc:_x@evil.example?="  # decodes to a line break and a Bcc header
    # a reply_to name may not hold an address (it would pose as a sender): "@" encoded instead
    reply_trap = "=?UTF-8?Q?=0ABcc:_x=40evil.example?="
    request = {
        **WELCOME,
        "to": [{"email": "ada@example.com", "name": trap}],
        "reply_to": f"{reply_trap} <desk@example.com>",
        "subject": trap,
        "headers": {"X-Note": trap},
        "context": {"name": trap, "action_url": "u"},
        "attachments": [{"filename": trap, "content_type": "text/plain", "content": "aGk="}],
    }
    await send(client, smtp, request)
    received = smtp.messages[0]
    assert received.rcpt_tos == ["ada@example.com"]
    message = received.message
    assert message["Subject"] == trap and message["X-Note"] == trap
    assert mailboxes(message, "To") == [(trap, "ada@example.com")]
    assert mailboxes(message, "Reply-To") == [(reply_trap, "desk@example.com")]
    assert "Bcc" not in message and "Cc" not in message
    [attached] = [part for part in message.iter_attachments()]
    assert attached.get_filename() == trap


async def test_the_test_server_refuses_lines_over_998_octets(smtp: SmtpServer) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port) as client:
        await client.sendmail("a@example.com", ["b@example.com"], b"\r\n" + b"A" * 998)
        with pytest.raises(aiosmtplib.SMTPDataError, match="Line too long"):
            await client.sendmail("a@example.com", ["b@example.com"], b"\r\n" + b"A" * 999)
    assert len(smtp.messages) == 1


async def test_utf8_local_part_is_sent_with_smtputf8(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await send(client, smtp, {**WELCOME, "to": ["josé@example.com"]})
    received = smtp.messages[0]
    assert received.rcpt_tos == ["josé@example.com"]
    assert "josé@example.com" in received.data.decode("utf-8")


async def test_render_error_after_acceptance_marks_it_failed(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    folder = tmp_path / "templates" / "greeting"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi {{ user.first_name }}")
    (folder / "body.html").write_text("<p>Hi {{ user.first_name }}</p>")
    settings = make_settings(tmp_path, smtp.port, templates_dir=tmp_path / "templates")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            request = {"template": "greeting", "to": ["a@example.com"], "context": {"user": "x"}}
            location = (await client.post("/v1/notifications", json=request)).headers["location"]

            async def failed() -> bool:
                return bool((await client.get(location)).json()["status"] == "failed")

            await wait_for(failed)
            error = (await client.get(location)).json()["last_error"]
    assert "failed to render" in error and "first_name" in error
    assert smtp.messages == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


@asynccontextmanager
async def secure_client(
    tmp_path: Path, ca: trustme.CA, smtp: SmtpServer, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    application: FastAPI = create_app(
        make_settings(tmp_path, smtp.port, smtp_ca_file=ca_file, **settings)
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_and_auth_work(tmp_path: Path, ca: trustme.CA, security: str) -> None:
    context = server_context(ca)
    smtp = SmtpServer(
        tls=context if security == "tls" else None,
        starttls=context if security == "starttls" else None,
        credentials=("mailer", "s3cret"),
    )
    await smtp.start()
    try:
        async with secure_client(
            tmp_path,
            ca,
            smtp,
            smtp_security=security,
            smtp_username="mailer",
            smtp_password="s3cret",
        ) as client:
            await send(client, smtp, WELCOME)
            assert (await client.get("/readyz")).status_code == 200
        assert smtp.auth_attempts
    finally:
        await smtp.stop()


async def test_starttls_setting_never_falls_back_to_plaintext(
    tmp_path: Path, ca: trustme.CA, smtp: SmtpServer
) -> None:
    # `smtp` offers no STARTTLS at all: sending pauses, nothing goes out, no attempt is burnt.
    async with secure_client(tmp_path, ca, smtp, smtp_security="starttls") as client:
        location = (await client.post("/v1/notifications", json=WELCOME)).headers["location"]

        async def paused() -> bool:
            checks = (await client.get("/readyz")).json()["checks"]
            return "TLS is required but not available" in checks["delivery"]

        await wait_for(paused)
        shown = (await client.get(location)).json()
        assert (shown["status"], shown["attempts"]) == ("queued", [])
    assert smtp.messages == []


@pytest.mark.parametrize("address", ["a b@example.com", "a@example.com> SIZE=1", "<a@example.com"])
def test_an_address_that_could_add_esmtp_parameters_never_reaches_the_wire(address: str) -> None:
    with pytest.raises(ValueError, match="SMTP command line"):
        command_path(address)
    assert command_path("ada@example.com") == b"<ada@example.com>"


async def test_the_envelope_sender_is_the_message_sender_by_default(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await send(client, smtp, {**WELCOME, "from": "Help <help@example.com>"})
    assert smtp.messages[0].mail_from == "help@example.com"


async def test_smtp_envelope_from_is_the_return_path_of_every_message(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = make_settings(tmp_path, smtp.port, smtp_envelope_from="bounces@example.com")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for request in (WELCOME, {**WELCOME, "from": "Help <help@example.com>"}):
                assert (await client.post("/v1/notifications", json=request)).status_code == 202
            await wait_for(lambda: len(smtp.messages) == 2)
    assert [m.mail_from for m in smtp.messages] == ["bounces@example.com"] * 2
    senders = sorted(str(m.message["From"]) for m in smtp.messages)
    assert senders == ["Help <help@example.com>", "Notifier <noreply@example.com>"]
