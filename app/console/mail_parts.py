"""A message's parts as the notification page shows them, read from its raw bytes (the ones
the SMTP server was given) with the `email` package: the HTML and text bodies and the header
fields, so the page shows what was sent rather than a second rendering of the template."""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart


@dataclass(frozen=True)
class MailParts:
    html: str | None
    text: str | None
    headers: list[tuple[str, str]]  # in order, values decoded (RFC 2047), unfolded


def mail_parts(data: bytes) -> MailParts:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)  # policy.default makes one
    return MailParts(
        html=_content(message.get_body(preferencelist=("html",))),
        text=_content(message.get_body(preferencelist=("plain",))),
        headers=[(name, _header(value)) for name, value in message.items()],
    )


def _content(part: MIMEPart | None) -> str | None:
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError, UnicodeError):  # an unknown charset, a broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else None


def _header(value: object) -> str:
    # a value the parser could not make sense of is still shown, as it came
    return " ".join(str(value).split("\r\n"))
