"""The webhook signature, as Stripe signs: `Notifier-Signature: t=<unix>,v1=<hex>`.

`v1` is the hex HMAC-SHA256, keyed with the secret's UTF-8 bytes, of `"<t>.<raw body>"`. While
a secret is being rotated, one `v1=` follows per secret in force, the current one first; a
receiver accepts the event if any of them verifies with a secret it holds, and can refuse a `t`
older than five minutes (a replay). `verify` is what the README's verifier does.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "Notifier-Signature"
TOLERANCE_SECONDS = 300.0


def sign(body: bytes, secret: str, *, timestamp: int) -> str:
    """The hex `v1` of `body` sent at `timestamp`, with `secret`."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secrets: Sequence[str], *, timestamp: int) -> str:
    """The header's value: `t=` and one `v1=` per secret, in the order given."""
    if not secrets:
        raise ValueError("no secret to sign with")
    return ",".join(
        [f"t={timestamp}", *(f"v1={sign(body, secret, timestamp=timestamp)}" for secret in secrets)]
    )


def verify(
    header: str,
    body: bytes,
    secret: str,
    *,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """True if `header` signs `body` with `secret` at a time within `tolerance` of `now`."""
    pairs = [item.partition("=") for item in header.split(",")]
    stamps = [value for key, _, value in pairs if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(body, secret, timestamp=timestamp)
    return any(key == "v1" and hmac.compare_digest(value, expected) for key, _, value in pairs)
