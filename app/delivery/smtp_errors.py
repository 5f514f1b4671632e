"""Turn an SMTP or network failure into what delivery should do about it.

TransientError: try again later (4xx, a lost or refused connection, a timeout).
PermanentError: this message will never go (5xx).
SmtpConfigError: our settings are wrong, whatever the message (login refused, TLS missing or
not trusted): delivery pauses, no attempt is counted, and the reason says which setting to fix.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from app.errors import DeliveryError, PermanentError, SmtpConfigError, TransientError

# TLS failures that say nothing about our settings: the peer went away mid-handshake.
_TLS_INTERRUPTED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def classify(exc: BaseException) -> DeliveryError:
    """Map an SMTP or network failure onto what delivery should do about it."""
    if isinstance(exc, DeliveryError):
        return exc
    if tls := _tls_fault(exc):
        return tls
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


def _tls_fault(exc: BaseException) -> SmtpConfigError | None:
    """A certificate we do not trust, a name it does not carry, or two ends that do not agree on
    TLS at all (TLS spoken to a plaintext port): every connection would fail the same way until
    the settings change, so these pause delivery rather than burn attempts. aiosmtplib raises
    the ssl error itself (STARTTLS) or wraps it (implicit TLS)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__
    if cause is None or isinstance(cause, _TLS_INTERRUPTED):
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        return SmtpConfigError(
            f"the SMTP server's TLS certificate is not trusted ({cause.verify_message}):"
            " set SMTP_CA_FILE to the certificate authority that signed it, and SMTP_HOST to"
            " a name the certificate carries"
        )
    return SmtpConfigError(
        f"TLS with the SMTP server failed ({cause.reason or cause}): check SMTP_SECURITY"
        " (tls: TLS from the first byte, usually port 465; starttls: usually port 587) and"
        " SMTP_PORT"
    )
