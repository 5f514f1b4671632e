"""Serialise a multipart/alternative message (text and HTML) straight to bytes.

The `email` package's EmailMessage re-parses every header it is given and costs milliseconds
per message; our messages have one fixed shape, so we write it directly: headers encoded with
RFC 2047 where needed and folded, bodies in quoted-printable (which can never contain the
boundary, since it starts with "=_"), CRLF line endings throughout.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Iterable
from email.header import Header

from app.addresses import Address

_MAX_LINE = 78
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_PART = (
    '--{boundary}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)


def _display_name(name: str) -> str:
    if not name.isascii():
        encoded: str = Header(name, "utf-8").encode(linesep="\r\n")
        return encoded
    if _SPECIALS.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def mailbox(address: Address) -> str:
    if not address.name:
        return address.smtp_email
    return f"{_display_name(address.name)} <{address.smtp_email}>"


def address_header(addresses: Iterable[Address]) -> str:
    return ",\r\n ".join(mailbox(a) for a in addresses)


def text_header(name: str, value: str) -> str:
    """An unstructured header value (Subject, X-...): RFC 2047 encoded if not ASCII, folded."""
    if value.isascii() and len(name) + len(value) + 2 <= _MAX_LINE:
        return value
    charset = "us-ascii" if value.isascii() else "utf-8"
    encoded: str = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return encoded


def _quoted_printable(text: str) -> bytes:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(normalised, istext=True).replace(b"\n", b"\r\n")


def multipart_alternative(headers: list[tuple[str, str]], *, text: str, html: str) -> bytes:
    """Headers (already encoded) followed by a text and an HTML part, as wire bytes."""
    boundary = "=_" + secrets.token_hex(16)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return b"".join(
        [
            (
                f"{head}MIME-Version: 1.0\r\n"
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            ).encode(),
            _PART.format(boundary=boundary, kind="plain").encode(),
            _quoted_printable(text),
            b"\r\n",
            _PART.format(boundary=boundary, kind="html").encode(),
            _quoted_printable(html),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
