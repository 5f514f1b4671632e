"""Attachments and inline images, compared byte for byte with what the SMTP server received."""

from __future__ import annotations

import base64
import os
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import WELCOME
from tests.smtp_server import SmtpServer
from tests.test_api import stored_count
from tests.test_delivery import accept, reaches

PDF = b"%PDF-1.4\n" + os.urandom(3000)
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(500)


def attachment(data: bytes, **fields: Any) -> dict[str, Any]:
    return {
        "filename": "file.pdf",
        "content_type": "application/pdf",
        "content": base64.b64encode(data).decode(),
        **fields,
    }


def parts(message: Any) -> list[Any]:
    payload: list[Any] = message.get_payload()
    return payload


async def received(client: httpx.AsyncClient, smtp: SmtpServer, files: list[Any]) -> EmailMessage:
    await reaches(client, await accept(client, {**WELCOME, "attachments": files}), "sent")
    return smtp.messages[0].message


async def test_attachment_arrives_byte_for_byte_in_multipart_mixed(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    message = await received(client, smtp, [attachment(PDF, filename="invoice 42.pdf")])
    assert message.get_content_type() == "multipart/mixed"
    body, attached = parts(message)
    assert body.get_content_type() == "multipart/alternative"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == "invoice 42.pdf"
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_payload(decode=True) == PDF


async def test_inline_image_is_related_to_the_html_by_content_id(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    logo = attachment(
        PNG, filename="logo.png", content_type="image/png", inline=True, content_id="logo"
    )
    message = await received(client, smtp, [logo, attachment(PDF)])
    related, pdf = parts(message)
    assert related.get_content_type() == "multipart/related"
    alternative, image = parts(related)
    assert alternative.get_content_type() == "multipart/alternative"
    assert image["Content-ID"] == "<logo>"
    assert image.get_content_disposition() == "inline"
    assert image.get_payload(decode=True) == PNG
    assert pdf.get_payload(decode=True) == PDF


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\ada\\report.csv", "report.csv"),
        ("evil\r\nContent-Type: text/html.txt", "html.txt"),
        ("evil\r\nX-Injected: yes.txt", "evilX-Injected: yes.txt"),
        ("nul\x00name.txt", "nulname.txt"),
        ("Übersicht – März.txt", "Übersicht – März.txt"),  # noqa: RUF001
        ('quote".txt', 'quote".txt'),
    ],
)
async def test_file_names_are_sanitised_and_encoded(
    client: httpx.AsyncClient, smtp: SmtpServer, given: str, sent: str
) -> None:
    file = attachment(b"hello", filename=given, content_type="text/plain")
    message = await received(client, smtp, [file])
    _, attached = parts(message)
    assert attached.get_filename() == sent
    assert attached.get_payload(decode=True) == b"hello"
    assert attached["X-Injected"] is None and message["X-Injected"] is None


REFUSED: list[tuple[str, dict[str, Any], int, str]] = [
    ("type not allowed", {"content_type": "application/x-msdownload"}, 422, "ATTACHMENT_TYPES"),
    ("invalid base64", {"content": "not base64!!"}, 422, "not valid base64"),
    ("inline without id", {"inline": True}, 422, "content_id"),
    ("path only", {"filename": "../../"}, 422, "no usable file name"),
    ("too large", {"content": base64.b64encode(b"x" * 2001).decode()}, 413, "MAX_ATTACHMENT_BYTES"),
]


@pytest.mark.parametrize(
    ("change", "status", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
async def test_bad_attachments_are_refused_naming_the_field(
    tmp_path: Any, smtp: SmtpServer, change: dict[str, Any], status: int, message: str
) -> None:
    from tests.test_delivery import service

    async with service(tmp_path, smtp, max_attachment_bytes=2000) as client:
        request = {**WELCOME, "attachments": [{**attachment(b"ok"), **change}]}
        response = await client.post("/v1/notifications", json=request)
    assert response.status_code == status
    error = response.json()["detail"][0]
    assert error["loc"][:3] == ["body", "attachments", 0]
    assert message in error["msg"]
    assert smtp.messages == []


async def test_attachments_over_the_total_are_413(tmp_path: Any, smtp: SmtpServer) -> None:
    from tests.test_delivery import service

    async with service(tmp_path, smtp, max_attachments_bytes=3000) as client:
        files = [attachment(b"x" * 1600), attachment(b"y" * 1600)]
        response = await client.post("/v1/notifications", json={**WELCOME, "attachments": files})
    assert response.status_code == 413
    assert "MAX_ATTACHMENTS_BYTES" in response.json()["detail"][0]["msg"]


async def test_nothing_is_stored_when_an_attachment_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    request = {**WELCOME, "attachments": [attachment(b"ok", content_type="application/x-sh")]}
    assert (await client.post("/v1/notifications", json=request)).status_code == 422
    assert stored_count(settings) == 0
