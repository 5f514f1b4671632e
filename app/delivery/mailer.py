"""Build the MIME message and hand it to the SMTP server.

With smtp_session (opening sessions, the probe), smtp_pool and smtp_errors, the only modules
that import aiosmtplib. Every SMTP failure leaves here as one of our TransientError (retry
later), PermanentError (give up) or SmtpConfigError (our settings).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache

import aiosmtplib

from app.addresses import Address
from app.api.schemas import NotificationRequest
from app.delivery import mime
from app.delivery.header_encoding import address_header, unstructured
from app.delivery.smtp_errors import classify
from app.delivery.smtp_pool import SmtpPool
from app.delivery.smtp_session import Sessions, command_path, sender_refused
from app.errors import DeliveryError, SmtpConfigError
from app.rendering.catalog import RenderedMail
from app.settings import Settings
from app.store.records import envelope_recipients


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


def build_message(
    request: NotificationRequest,
    rendered: RenderedMail,
    *,
    sender: Address,
    message_id: str,
    unsubscribe: str | None = None,
) -> OutgoingMail:
    """A multipart/alternative message (text, then HTML). BCC goes into the envelope only.
    `unsubscribe`: a one-click unsubscribe link (RFC 8058), printable ASCII."""
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
    if unsubscribe is not None:
        headers += [
            ("List-Unsubscribe", f"<{unsubscribe}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
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


@dataclass
class Contact:
    """When the SMTP server last took us, and when it last did not and why, from deliveries
    and probes alike: readiness and metrics read this, so they never open a connection."""

    ok_at: float | None = None
    failed_at: float | None = None
    failure: str | None = None

    def ok(self) -> None:
        self.ok_at = time.time()

    def after(self, error: DeliveryError) -> None:
        # A reply, even one refusing this message, is contact; silence or a fault of ours is not.
        if error.code is not None and not isinstance(error, SmtpConfigError):
            self.ok()
        else:
            self.failed_at, self.failure = time.time(), str(error)

    @property
    def problem(self) -> str | None:
        """Why the last contact failed; None when it worked or none was made yet."""
        if self.failed_at is None or (self.ok_at is not None and self.ok_at >= self.failed_at):
            return None
        return self.failure


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sessions = Sessions(settings)
        self.contact = Contact()
        envelope = settings.smtp_envelope_from
        self._envelope_from = envelope.smtp_email if envelope else None
        self._envelope_utf8 = envelope.needs_smtputf8 if envelope else False
        # the sender our settings chose: a refusal of it is a settings fault, not the message's
        self._own_sender = self._sessions.probe_sender.smtp_email
        self._pool = SmtpPool(
            self._sessions.open,
            size=settings.delivery_concurrency,
            idle_seconds=settings.smtp_idle_seconds,
        )

    def close_idle(self) -> None:
        self._pool.close_idle()

    async def close(self) -> None:
        await self._pool.close()

    async def send(self, mail: OutgoingMail, recipients: list[str]) -> SendResult:
        """Send `mail` to `recipients` over one pooled connection. Raises a DeliveryError
        (carrying the recipients already delivered) when a transaction as a whole fails."""
        result = SendResult()
        # SMTP_ENVELOPE_FROM replaces the return path only; the From header stays the sender's
        envelope_from = self._envelope_from or mail.envelope_from
        smtputf8 = mail.smtputf8 or self._envelope_utf8
        try:
            async with (
                asyncio.timeout(self._settings.attempt_deadline),
                self._pool.connection() as smtp,
            ):
                remaining = recipients
                while remaining:
                    remaining = await _transaction(
                        smtp,
                        mail,
                        remaining,
                        result,
                        envelope_from=envelope_from,
                        smtputf8=smtputf8,
                    )
        except Exception as exc:
            error = self._classify(exc)
            error.delivered = result.delivered
            self.contact.after(error)
            raise error from exc
        self.contact.ok()
        return result

    async def probe(self) -> None:
        """Does the SMTP server take us? Walks a session as far as a recipient (TLS, EHLO,
        AUTH, MAIL FROM, RCPT TO, RSET) without sending; raises a DeliveryError when not."""
        try:
            async with asyncio.timeout(self._settings.attempt_deadline):
                await self._sessions.probe()
        except Exception as exc:
            error = classify(exc)
            self.contact.after(error)
            raise error from exc
        self.contact.ok()

    def _classify(self, exc: Exception) -> DeliveryError:
        if (
            isinstance(exc, aiosmtplib.SMTPSenderRefused)
            and exc.code >= 500
            and exc.sender == self._own_sender
        ):
            return sender_refused(exc.sender, exc.code, exc.message)
        return classify(exc)


# "Too many recipients" (452, or 552 from servers following RFC 821): send the rest in another
# transaction on the same connection.
_TOO_MANY = {452, 552}


async def _transaction(
    smtp: aiosmtplib.SMTP,
    mail: OutgoingMail,
    recipients: list[str],
    result: SendResult,
    *,
    envelope_from: str,
    smtputf8: bool,
) -> list[str]:
    """One MAIL/RCPT/DATA transaction; returns the recipients to try in the next one.

    The commands go out one by one through `execute_command` (which refuses control
    characters) rather than `sendmail`, which would parse every address twice more and scan the
    whole message for its size: a tenth of the delivery path's time, for addresses that were
    validated when the notification was accepted."""
    if smtputf8 and not smtp.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    options = [b"SMTPUTF8"] if smtputf8 else []
    reply = await smtp.execute_command(b"MAIL", b"FROM:" + command_path(envelope_from), *options)
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, envelope_from)
    replies: dict[str, tuple[int, str]] = {}
    for rcpt in recipients:
        reply = await smtp.execute_command(b"RCPT", b"TO:" + command_path(rcpt))
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
