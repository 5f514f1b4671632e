"""Build the MIME message and hand it to the SMTP server.

The only module that imports aiosmtplib. Every SMTP failure leaves here as one of our
TransientError (retry later), PermanentError (give up) or SmtpConfigError (our settings).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache

import aiosmtplib

from app import mime
from app.addresses import Address
from app.errors import DeliveryError, PermanentError, SmtpConfigError, TransientError
from app.header_encoding import address_header, unstructured
from app.rendering import RenderedMail
from app.schemas import NotificationRequest
from app.settings import Settings, SmtpSecurity
from app.smtp_pool import SmtpPool


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


@lru_cache(maxsize=2)
def _date(second: int) -> str:
    return formatdate(second, usegmt=True)


def _date_now() -> str:
    """The Date header, formatted once a second rather than once a message."""
    return _date(int(time.time()))


def envelope_recipients(request: NotificationRequest) -> list[str]:
    return list(dict.fromkeys(a.smtp_email for a in request.recipients))


def build_message(
    request: NotificationRequest, rendered: RenderedMail, *, sender: Address, message_id: str
) -> OutgoingMail:
    """A multipart/alternative message (text, then HTML). BCC goes into the envelope only."""
    recipients = envelope_recipients(request)
    # every address in the envelope or a header (Reply-To too) counts: a UTF-8 address
    # anywhere makes the message need SMTPUTF8 (RFC 6531)
    addresses = [sender, *request.recipients, *([request.reply_to] if request.reply_to else [])]
    smtputf8 = any(a.needs_smtputf8 for a in addresses)
    headers = [
        ("From", address_header("From", [sender])),
        ("To", address_header("To", request.to)),
    ]
    if request.cc:
        headers.append(("Cc", address_header("Cc", request.cc)))
    if request.reply_to:
        headers.append(("Reply-To", address_header("Reply-To", [request.reply_to])))
    headers += [
        ("Subject", unstructured("Subject", rendered.subject)),
        ("Date", _date_now()),
        ("Message-ID", message_id),
    ]
    headers += [(name, unstructured(name, value)) for name, value in request.headers.items()]
    files = [
        mime.FilePart(a.filename, a.content_type, a.content, a.content_id)
        for a in request.attachments
    ]
    data = mime.message(
        headers,
        text=rendered.text,
        html=rendered.html,
        inline=[f for f, a in zip(files, request.attachments, strict=True) if a.inline],
        attached=[f for f, a in zip(files, request.attachments, strict=True) if not a.inline],
    )
    return OutgoingMail(
        envelope_from=sender.smtp_email,
        recipients=recipients,
        data=data,
        message_id=message_id,
        smtputf8=smtputf8,
    )


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # aiosmtplib would otherwise look the FQDN up again on every connection.
        self._local_hostname = socket.getfqdn()
        self._pool = SmtpPool(
            self._connect,
            size=settings.delivery_concurrency,
            idle_seconds=settings.smtp_idle_seconds,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp = self._client()
        await smtp.connect()
        if smtp.is_ehlo_or_helo_needed:  # connect() greets only for TLS or AUTH
            try:
                await smtp.ehlo()
            except aiosmtplib.SMTPHeloError:
                await smtp.helo()
        return smtp

    def close_idle(self) -> None:
        self._pool.close_idle()

    async def close(self) -> None:
        await self._pool.close()

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
        """Send `mail` to `recipients` over one pooled connection. Raises a DeliveryError
        (carrying the recipients already delivered) when a transaction as a whole fails."""
        result = SendResult()
        try:
            async with (
                asyncio.timeout(self._settings.attempt_deadline),
                self._pool.connection() as smtp,
            ):
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
    """One MAIL/RCPT/DATA transaction; returns the recipients to try in the next one.

    The commands go out one by one through `execute_command` (which refuses control
    characters) rather than `sendmail`, which would parse every address twice more and scan the
    whole message for its size: a tenth of the delivery path's time, for addresses that were
    validated when the notification was accepted."""
    if mail.smtputf8 and not smtp.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    options = [b"SMTPUTF8"] if mail.smtputf8 else []
    reply = await smtp.execute_command(b"MAIL", b"FROM:" + _path(mail.envelope_from), *options)
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, mail.envelope_from)
    replies: dict[str, tuple[int, str]] = {}
    for rcpt in recipients:
        reply = await smtp.execute_command(b"RCPT", b"TO:" + _path(rcpt))
        if reply.code not in (250, 251):
            replies[rcpt] = (reply.code, reply.message)
    accepted = [rcpt for rcpt in recipients if rcpt not in replies]
    if accepted:
        result.reply = (await smtp.data(mail.data)).message
        result.delivered.extend(accepted)
    elif smtp.is_connected:  # every recipient refused: no DATA; reset for the next message
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()  # the pool replaces a closed connection
    next_round = []
    for rcpt, (code, text) in replies.items():
        if code in _TOO_MANY and accepted:
            next_round.append(rcpt)
        elif code < 500 or code in _TOO_MANY:
            result.deferred[rcpt] = (code, text)
        else:
            result.refused[rcpt] = (code, text)
    return next_round


def _path(address: str) -> bytes:
    """`<address>` for MAIL FROM or RCPT TO. Validated addresses never hold a space or an angle
    bracket; checked again because one would let a caller add ESMTP parameters."""
    if any(c in address for c in " <>"):
        raise ValueError(f"address {address!r} cannot go on an SMTP command line")
    return b"<" + address.encode() + b">"


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
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        error = TransientError if 400 <= exc.code < 500 else PermanentError
        return error(exc.message, code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return TransientError(f"SMTP server timed out: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | ssl.SSLError):
        return TransientError(f"SMTP connection failed: {exc}")
    return PermanentError(f"unexpected error while sending: {exc!r}")
