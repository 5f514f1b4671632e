"""Serialise our one shape of message straight to bytes: text and HTML, with optional inline
images and attachments.

The `email` package's EmailMessage re-parses every header it is given and costs milliseconds
per message; our messages have one fixed shape, so we write it directly: headers encoded with
RFC 2047 where needed and folded, bodies in quoted-printable (which can never contain the
boundary, since it starts with "=_"), files in base64 (which cannot either), CRLF line
endings throughout.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import encode_rfc2231

from app.addresses import Address
from app.ids import new_token

_MAX_LINE = 78
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


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


@dataclass(frozen=True)
class FilePart:
    filename: str
    content_type: str
    content_base64: str
    content_id: str | None = None


# An entity is its headers and its body; a message is a tree of them.
_Entity = tuple[list[tuple[str, str]], bytes]


def _quoted_printable(text: str) -> bytes:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(normalised, istext=True).replace(b"\n", b"\r\n")


def _text(kind: str, text: str) -> _Entity:
    headers = [
        ("Content-Type", f'text/{kind}; charset="utf-8"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
    ]
    return headers, _quoted_printable(text)


def _filename_param(name: str, filename: str) -> str:
    if filename.isascii():
        return f'{name}="' + filename.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name}*={encode_rfc2231(filename, 'utf-8')}"  # RFC 2231


def _file(part: FilePart, disposition: str) -> _Entity:
    headers = [
        ("Content-Type", f"{part.content_type}; {_filename_param('name', part.filename)}"),
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Disposition", f"{disposition}; {_filename_param('filename', part.filename)}"),
    ]
    if part.content_id:
        headers.append(("Content-ID", f"<{part.content_id}>"))
    data = part.content_base64
    lines = [data[i : i + 76] for i in range(0, len(data), 76)]
    return headers, "\r\n".join(lines).encode("ascii")


def _multipart(subtype: str, parts: list[_Entity], extra: str = "") -> _Entity:
    boundary = "=_" + new_token()
    body = b"".join(
        b"--" + boundary.encode() + b"\r\n" + _head(headers) + b"\r\n" + content + b"\r\n"
        for headers, content in parts
    )
    content_type = f'multipart/{subtype}; boundary="{boundary}"{extra}'
    return [("Content-Type", content_type)], body + f"--{boundary}--\r\n".encode()


def _head(headers: list[tuple[str, str]]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8")


def message(
    headers: list[tuple[str, str]],
    *,
    text: str,
    html: str,
    inline: Sequence[FilePart] = (),
    attached: Sequence[FilePart] = (),
) -> bytes:
    """Headers (already encoded) and the body as wire bytes: multipart/alternative (text, then
    HTML), inside multipart/related with inline images, inside multipart/mixed with attachments.
    """
    body = _multipart("alternative", [_text("plain", text), _text("html", html)])
    if inline:
        parts = [body, *(_file(p, "inline") for p in inline)]
        body = _multipart("related", parts, '; type="multipart/alternative"')
    if attached:
        body = _multipart("mixed", [body, *(_file(p, "attachment") for p in attached)])
    body_headers, content = body
    return _head([*headers, ("MIME-Version", "1.0"), *body_headers]) + b"\r\n" + content
