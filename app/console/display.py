"""How a stored notification reads in one line of the activity list: plain values for the
templates (which escape them), computed once here rather than in Jinja."""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.api.views import moment
from app.store.records import Notification

_LONGEST_ERROR = 160  # the list shows the start; the notification's page shows it whole


@dataclass(frozen=True)
class Row:
    id: str
    status: str
    template: str
    first_recipient: str
    more_recipients: int  # shown as "+N"
    subject: str | None  # None until an attempt rendered it (unless the request set one)
    attempts: int
    last_error: str | None
    age: str
    created_at: str  # ISO 8601, UTC, for the title of the age


def row(n: Notification, *, now: float) -> Row:
    r = n.request
    everyone = [*r.to, *r.cc, *r.bcc]
    first = everyone[0].email if everyone else ""
    error = n.last_error or n.unreadable
    if error and len(error) > _LONGEST_ERROR:
        error = error[: _LONGEST_ERROR - 1] + "…"
    return Row(
        id=n.id,
        status=n.status.value,
        template=r.template,
        first_recipient=first,
        more_recipients=max(len(everyone) - 1, 0),
        subject=n.subject or r.subject,
        attempts=n.attempt_count,
        last_error=error,
        age=age(now - n.created_at),
        created_at=moment(n.created_at).isoformat(timespec="seconds"),
    )


def age(seconds: float) -> str:
    """How long ago, in the largest unit that fits: 42 s, 5 min, 3 h, 12 d."""
    if not seconds >= 0:  # a clock step back, or a time edited by hand (nan included)
        return "just now"
    if math.isinf(seconds):
        return "long ago"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"
