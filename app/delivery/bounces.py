"""Which refusals say the recipient does not exist (a hard bounce), so that the address goes on
the caller's suppression list instead of being tried again with the next notification.

HARD_BOUNCE_CODES lists basic reply codes (550) and enhanced status codes (RFC 3463) or their
classes (5.1.x). A reply that carries an enhanced code is judged by it alone, since it is the
more precise: "550 5.1.1 no such user" is a hard bounce, "550 5.7.1 message refused as spam"
is not (the address exists). A reply without one is judged by its basic code.
"""

from __future__ import annotations

import re

from app.store.records import Refusal

_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9.])")


def is_hard_bounce(code: int, message: str, *, codes: tuple[str, ...]) -> bool:
    enhanced = _ENHANCED.match(message.lstrip())
    if enhanced is None:
        return str(code) in codes
    klass, subject, detail = enhanced.groups()
    for entry in codes:
        parts = entry.split(".")
        if len(parts) == 3 and parts[:2] == [klass, subject] and parts[2] in ("x", detail):
            return True
    return False


def hard_bounces(refused: list[Refusal], *, codes: tuple[str, ...]) -> list[str]:
    """The refused recipients whose refusal is a hard bounce."""
    return [r.email for r in refused if is_hard_bounce(r.code, r.message, codes=codes)]
