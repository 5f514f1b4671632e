"""Serialise our one shape of message straight to bytes: text and HTML, with optional inline
images and attachments.

The `email` package's EmailMessage re-parses every header it is given and costs milliseconds
per message; our messages have one fixed shape, so we write it directly: header values encoded
and folded by app.header_encoding, bodies in quoted-printable (which can never contain the
boundary, since it starts with "=_"), files in base64 (which cannot either), CRLF line
endings throughout, no line longer than 998 octets.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from app.delivery.header_encoding import FOLD_AT, parameter
from app.ids import new_token


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


def _with_parameter(header: str, value: str, name: str, filename: str) -> str:
    """`value; name=filename`, the parameter on a line of its own when it does not fit."""
    param = parameter(name, filename)
    if "\n" not in param and len(header) + len(value) + len(param) + 4 <= FOLD_AT:
        return f"{value}; {param}"
    return f"{value};\r\n {param}"


def _file(part: FilePart, disposition: str) -> _Entity:
    headers = [
        ("Content-Type", _with_parameter("Content-Type", part.content_type, "name", part.filename)),
        ("Content-Transfer-Encoding", "base64"),
        (
            "Content-Disposition",
            _with_parameter("Content-Disposition", disposition, "filename", part.filename),
        ),
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
