"""One-click unsubscribe links (RFC 8058): a token that names who unsubscribes from what, signed
so that the service can trust it without looking anything up.

A token is `<payload>.<mac>`, both base64url without padding: the payload is the JSON list
[caller, category, address] (address in lower case), the mac an HMAC-SHA256 of the payload
keyed with UNSUBSCRIBE_SECRET. Only canonical base64url is read, so a token has one spelling
and any change to it is refused. Tokens do not expire: an unsubscribe link must keep working
for as long as the mail is kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

_PART = re.compile(r"[A-Za-z0-9_-]+")
# kept apart from any other use the secret might be put to
_DOMAIN = b"notifier unsubscribe v1\x00"


@dataclass(frozen=True)
class Subscription:
    """Mail of `category` from `caller` to `address`: what a token unsubscribes from."""

    caller: str
    category: str
    address: str


def sign(secret: bytes, subscription: Subscription) -> str:
    s = subscription
    payload = json.dumps([s.caller, s.category, s.address.lower()], separators=(",", ":"))
    data = payload.encode()
    return f"{_encode(data)}.{_encode(_mac(secret, data))}"


def verify(secret: bytes, token: str) -> Subscription | None:
    """The subscription a token names, or None for anything not signed with `secret`."""
    payload, dot, mac = token.partition(".")
    if not dot or not _PART.fullmatch(payload) or not _PART.fullmatch(mac):
        return None
    data, given = _decode(payload), _decode(mac)
    if data is None or given is None or not hmac.compare_digest(given, _mac(secret, data)):
        return None
    try:
        caller, category, address = json.loads(data)
    except (TypeError, ValueError):
        return None
    if not all(isinstance(v, str) for v in (caller, category, address)):
        return None
    return Subscription(caller=caller, category=category, address=address)


@dataclass(frozen=True)
class Links:
    """How this service makes unsubscribe links: PUBLIC_URL and UNSUBSCRIBE_SECRET."""

    public_url: str
    secret: bytes

    def link(self, subscription: Subscription) -> str:
        return f"{self.public_url}/u/{sign(self.secret, subscription)}"


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + data, hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes | None:
    """Canonical base64url only: unused bits must be zero, so no two spellings decode alike."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None
    return data if _encode(data) == text else None
