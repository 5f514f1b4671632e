"""Open an SMTP session the way the settings say, and the readiness probe that walks one.

A session connects (TLS from the first byte, or STARTTLS that is required, never optional),
greets with SMTP_LOCAL_HOSTNAME and logs in with one mechanism. The probe goes on as far as a
recipient and resets: whatever would make the server refuse every mail we send (our name, our
login, our sender, our connection) shows up there, as a settings fault, not in failed mail.
"""

from __future__ import annotations

import contextlib
import socket

import aiosmtplib

from app.addresses import Address
from app.errors import SmtpConfigError
from app.settings import Settings, SmtpSecurity

# Replies to AUTH that refuse the mechanism rather than our credentials (RFC 4954): only
# then is another mechanism worth a try.
_MECHANISM_REFUSED = {504, 534, 538}


def command_path(address: str) -> bytes:
    """`<address>` for MAIL FROM or RCPT TO. Validated addresses never hold a space or an angle
    bracket; checked again because one would let a caller add ESMTP parameters."""
    if any(c in address for c in " <>"):
        raise ValueError(f"address {address!r} cannot go on an SMTP command line")
    return b"<" + address.encode() + b">"


def sender_refused(sender: str, code: int, message: str) -> SmtpConfigError:
    """The server refuses the sender our settings chose: it would refuse every such mail."""
    return SmtpConfigError(
        f"the SMTP server refuses our sender <{sender}> ({code} {message}): set"
        " SMTP_ENVELOPE_FROM (or MAIL_FROM) to an address it accepts from this client or login",
        code=code,
    )


class Sessions:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # aiosmtplib would otherwise look the FQDN up again on every connection.
        self.local_hostname = settings.smtp_local_hostname or socket.getfqdn()
        # the sender the probe offers: the return path when one is set, else the default sender
        self.probe_sender: Address = settings.smtp_envelope_from or settings.mail_from

    async def open(self) -> aiosmtplib.SMTP:
        """A connected, greeted and (with SMTP_USERNAME) logged-in session."""
        smtp = self._client()
        await smtp.connect()  # closes itself on failure
        try:
            if smtp.is_ehlo_or_helo_needed:  # connect() greets only for STARTTLS
                await _greet(smtp)
            if self._settings.smtp_username is not None:
                await _login(smtp, self._settings)
        except aiosmtplib.SMTPHeloError as exc:
            smtp.close()
            raise self._helo_refused(exc) from exc
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def probe(self) -> None:
        """Open a session, offer our sender and postmaster at its domain as recipient, reset and
        say goodbye: nothing is sent. RFC 5321 (4.5.1) obliges every server to take mail for
        postmaster, so a 5xx to that recipient objects to us, not to the recipient; Postfix, for
        one, applies its HELO and sender restrictions only at RCPT."""
        smtp = await self.open()
        try:
            await self._envelope(smtp)
            await smtp.rset()
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
        finally:
            smtp.close()

    async def _envelope(self, smtp: aiosmtplib.SMTP) -> None:
        sender = self.probe_sender.smtp_email
        options = [b"SMTPUTF8"] if self.probe_sender.needs_smtputf8 else []
        if options and not smtp.supports_extension("smtputf8"):
            raise SmtpConfigError(
                f"our sender <{sender}> needs SMTPUTF8, which the SMTP server does not offer:"
                " set SMTP_ENVELOPE_FROM to an ASCII address"
            )
        reply = await smtp.execute_command(b"MAIL", b"FROM:" + command_path(sender), *options)
        if reply.code >= 500:
            raise sender_refused(sender, reply.code, reply.message)
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        postmaster = "postmaster@" + sender.rpartition("@")[2]
        reply = await smtp.execute_command(b"RCPT", b"TO:" + command_path(postmaster))
        if reply.code >= 500:
            raise SmtpConfigError(
                f"the SMTP server refuses even <{postmaster}> from us ({reply.code}"
                f" {reply.message}), so it would refuse every mail: it objects to our name"
                f" (SMTP_LOCAL_HOSTNAME, now {self.local_hostname!r}), our sender or our"
                " connection",
                code=reply.code,
            )
        if reply.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, postmaster)

    def _helo_refused(self, exc: aiosmtplib.SMTPHeloError) -> Exception:
        if exc.code < 500:
            return exc  # a temporary refusal: classified as such by the caller
        return SmtpConfigError(
            f"the SMTP server refuses our name {self.local_hostname!r} in EHLO/HELO"
            f" ({exc.code} {exc.message}): set SMTP_LOCAL_HOSTNAME to this host's fully"
            " qualified name",
            code=exc.code,
        )

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout,
            use_tls=s.smtp_security is SmtpSecurity.TLS,
            # starttls is required, never optional: no silent fallback to plaintext
            start_tls=s.smtp_security is SmtpSecurity.STARTTLS,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
            local_hostname=self.local_hostname,
        )


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()  # a server without ESMTP


async def _login(smtp: aiosmtplib.SMTP, settings: Settings) -> None:
    """Log in with one mechanism. aiosmtplib's `login` tries every mechanism the server offers,
    so a wrong password cost two or three failed logins per connection, and a relay that locks
    accounts after failed logins locks ours sooner; the next mechanism is tried only when the
    server refused the mechanism itself."""
    tls = smtp.get_transport_info("sslcontext") is not None
    if not smtp.supports_extension("auth"):
        raise SmtpConfigError(
            "SMTP_USERNAME is set but the SMTP server offers no login"
            + ("" if tls else " on a plaintext connection: set SMTP_SECURITY to starttls or tls")
        )
    methods = smtp.supported_auth_methods
    if not methods:
        offered = ", ".join(smtp.server_auth_methods).upper()
        raise SmtpConfigError(
            f"the SMTP server offers no login mechanism we speak (it offers {offered};"
            " we speak CRAM-MD5, PLAIN and LOGIN)"
        )
    username = settings.smtp_username or ""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    for method in methods:
        try:
            await getattr(smtp, "auth_" + method.replace("-", ""))(username, password)
            return
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code not in _MECHANISM_REFUSED or method == methods[-1]:
                raise
