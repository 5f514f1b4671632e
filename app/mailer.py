"""Build the MIME message and hand it to the SMTP server.

The only module that imports aiosmtplib. Every SMTP failure leaves here as one of our
TransientError (retry later), PermanentError (give up) or SmtpConfigError (our settings).
"""

from __future__ import annotations

import asyncio
import email.policy
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from app.addresses import Address
from app.errors import DeliveryError, PermanentError, SmtpConfigError, TransientError
from app.rendering import RenderedMail
from app.schemas import NotificationRequest
from app.settings import Settings, SmtpSecurity


@dataclass(frozen=True)
class OutgoingMail:
    envelope_from: str
    recipients: list[str]
    data: bytes
    message_id: str
    smtputf8: bool


@dataclass
class SendResult:
    """Per-recipient outcome of one attempt. `deferred` recipients may succeed later;
    `refused` ones never will."""

    delivered: list[str] = field(default_factory=list)
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    reply: str = ""


def _header_address(address: Address) -> HeaderAddress:
    local, _, domain = address.smtp_email.rpartition("@")
    return HeaderAddress(display_name=address.name or "", username=local, domain=domain)


def envelope_recipients(request: NotificationRequest) -> list[str]:
    return list(dict.fromkeys(a.smtp_email for a in request.recipients))


def build_message(
    request: NotificationRequest, rendered: RenderedMail, *, sender: Address, message_id: str
) -> OutgoingMail:
    """A multipart/alternative message (text, then HTML). BCC goes into the envelope only."""
    recipients = envelope_recipients(request)
    smtputf8 = sender.needs_smtputf8 or any(a.needs_smtputf8 for a in request.recipients)

    msg = EmailMessage(policy=email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP)
    msg["From"] = _header_address(sender)
    msg["To"] = [_header_address(a) for a in request.to]
    if request.cc:
        msg["Cc"] = [_header_address(a) for a in request.cc]
    if request.reply_to:
        msg["Reply-To"] = _header_address(request.reply_to)
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id
    for name, value in request.headers.items():
        msg[name] = value
    msg.set_content(rendered.text, charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return OutgoingMail(
        envelope_from=sender.smtp_email,
        recipients=recipients,
        data=msg.as_bytes(),
        message_id=message_id,
        smtputf8=smtputf8,
    )


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # aiosmtplib would otherwise look the FQDN up again on every connection.
        self._local_hostname = socket.getfqdn()

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout,
            use_tls=s.smtp_security is SmtpSecurity.TLS,
            # starttls is required, never optional: no silent fallback to plaintext
            start_tls=s.smtp_security is SmtpSecurity.STARTTLS,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
            local_hostname=self._local_hostname,
        )

    async def send(self, mail: OutgoingMail, recipients: list[str]) -> SendResult:
        """Send `mail` to `recipients` over one connection. Raises a DeliveryError (carrying
        the recipients already delivered) when a transaction as a whole fails."""
        result = SendResult()
        try:
            async with self._client() as smtp:
                # The deadline covers the transactions, not the QUIT after them: a slow
                # goodbye must not turn a delivered message into a retried one.
                async with asyncio.timeout(self._settings.attempt_deadline):
                    remaining = recipients
                    while remaining:
                        remaining = await _transaction(smtp, mail, remaining, result)
        except Exception as exc:
            error = classify(exc)
            error.delivered = result.delivered
            raise error from exc
        return result

    async def check(self) -> None:
        """Connect (TLS and AUTH included) and say goodbye: is the SMTP server usable?"""
        try:
            async with self._client() as smtp:
                await smtp.noop()
        except Exception as exc:
            raise classify(exc) from exc


# "Too many recipients" (452, or 552 from servers following RFC 821): send the rest in another
# transaction on the same connection.
_TOO_MANY = {452, 552}


async def _transaction(
    smtp: aiosmtplib.SMTP, mail: OutgoingMail, recipients: list[str], result: SendResult
) -> list[str]:
    """One MAIL/RCPT/DATA transaction; returns the recipients to try in the next one."""
    try:
        errors, result.reply = await smtp.sendmail(
            mail.envelope_from,
            recipients,
            mail.data,
            mail_options=["SMTPUTF8"] if mail.smtputf8 else [],
        )
        replies = {rcpt: (reply.code, reply.message) for rcpt, reply in errors.items()}
    except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient refused: no DATA sent
        replies = {r.recipient: (r.code, r.message) for r in exc.recipients}
    accepted = [rcpt for rcpt in recipients if rcpt not in replies]
    result.delivered.extend(accepted)
    next_round = []
    for rcpt, (code, text) in replies.items():
        if code in _TOO_MANY and accepted:
            next_round.append(rcpt)
        elif code < 500 or code in _TOO_MANY:
            result.deferred[rcpt] = (code, text)
        else:
            result.refused[rcpt] = (code, text)
    return next_round


def classify(exc: BaseException) -> DeliveryError:
    """Map an SMTP or network failure onto what delivery should do about it."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SmtpConfigError(f"SMTP authentication refused: {exc.message}", code=exc.code)
    if type(exc) in (aiosmtplib.SMTPException, aiosmtplib.SMTPNotSupported):
        message = exc.message  # type: ignore[attr-defined]
        if "TLS" in message.upper():  # "STARTTLS extension not supported by server"
            return SmtpConfigError(f"TLS is required but not available: {message}")
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return PermanentError(message)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = [(r.code, f"{r.recipient}: {r.message}") for r in exc.recipients]
        code = min(code for code, _ in replies)
        text = "all recipients refused: " + "; ".join(f"{c} {m}" for c, m in replies)
        return TransientError(text, code=code) if code < 500 else PermanentError(text, code=code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error = TransientError if 400 <= exc.code < 500 else PermanentError
        return error(exc.message, code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return TransientError(f"SMTP server timed out: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | ssl.SSLError):
        return TransientError(f"SMTP connection failed: {exc}")
    return PermanentError(f"unexpected error while sending: {exc!r}")
