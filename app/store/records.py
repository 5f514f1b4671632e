"""What the store keeps and hands out: plain records, no database and no HTTP."""

from __future__ import annotations

import string
import time
from dataclasses import dataclass, field
from datetime import datetime

from app.addresses import Address
from app.api.schemas import NotificationRequest, RecipientOutcome, Status
from app.ids import new_token, new_uuid
from app.ops.logs import request_id

# States in which a notification still waits for a delivery attempt.
WAITING = (Status.QUEUED, Status.SCHEDULED, Status.DEFERRED)
# States after which nothing more is sent.
FINISHED = (Status.SENT, Status.FAILED, Status.CANCELLED, Status.SUPPRESSED)
# A worker whose heartbeat is this old is forgotten: each worker process beats under a name of
# its own (host:pid), so the names of stopped ones would pile up.
HEARTBEAT_MEMORY_SECONDS = 86400.0


def initial_status(request: NotificationRequest, *, accepted_at: float) -> Status:
    """What a notification is when accepted: scheduled if its send_at lies ahead."""
    ahead = request.send_at is not None and request.send_at.timestamp() > accepted_at
    return Status.SCHEDULED if ahead else Status.QUEUED


@dataclass(frozen=True)
class RecipientAttempt:
    """What one attempt did to one envelope recipient: delivered, deferred (tried again later)
    or refused (for good), with the server's reply when it refused."""

    email: str
    outcome: str
    code: int | None = None
    message: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "email": self.email,
            "outcome": self.outcome,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True)
class AttemptRecord:
    at: float
    outcome: str
    smtp_code: int | None
    detail: str | None
    duration_ms: float
    # empty for attempts that reached no recipient, and for those recorded before 0005
    recipients: tuple[RecipientAttempt, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """A recipient the SMTP server refused for good; the others still got the mail."""

    email: str
    code: int
    message: str

    def as_json(self) -> dict[str, object]:
        return {"email": self.email, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Skipped:
    """A recipient left out because it is on the suppression list, and why it is there."""

    email: str
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"email": self.email, "reason": self.reason}


def envelope_recipients(request: NotificationRequest) -> list[str]:
    """Everyone the mail goes to (to, cc and bcc), once each, as the SMTP server is told."""
    return list(dict.fromkeys(map(_smtp_email, request.recipients)))


def _smtp_email(address: Address) -> str:
    try:
        return address.smtp_email
    except UnicodeError:  # a domain IDNA cannot encode: only in a row edited by hand
        return address.email


@dataclass
class Notification:
    id: str
    status: Status
    caller: str
    request: NotificationRequest
    message_id: str
    created_at: float
    updated_at: float
    request_id: str | None = None  # of the HTTP request that accepted it, for the logs
    subject: str | None = None
    pending: list[str] | None = None  # envelope recipients still to reach; None: all of them
    # envelope recipients the server took; None: not recorded (a row from an older version)
    delivered: list[str] | None = None
    refused: list[Refusal] = field(default_factory=list)
    # envelope recipients skipped as suppressed (by the attempts since the last retry)
    suppressed: list[Skipped] = field(default_factory=list)
    last_error: str | None = None
    # when it is due; while `sending`, when the claim's lease expires
    due_at: float | None = None
    sent_at: float | None = None
    attempt_count: int = 0
    lease: int = 0  # the claim's fencing token: a new one with every claim
    retried_at: float | None = None  # the last retry of a failed one: MAX_AGE counts from here
    attempts: list[AttemptRecord] = field(default_factory=list)
    # set on a row read back only in part (edited by hand, or from another version): what
    # could not be read; such a row is shown, never sent
    unreadable: str | None = None

    def recipient_outcomes(self) -> list[tuple[str, RecipientOutcome, Refusal | Skipped | None]]:
        """Each envelope recipient with what became of it, in the order of the request."""
        refused = {r.email: r for r in self.refused}
        skipped = {s.email: s for s in self.suppressed}
        envelope = envelope_recipients(self.request)
        if self.delivered is not None:
            delivered = set(self.delivered)
        elif self.status is Status.SENT:  # recorded before `delivered` was: all but the refused
            delivered = set(envelope) - set(refused)
        else:
            delivered = set()
        if self.status is Status.CANCELLED:
            rest = RecipientOutcome.CANCELLED
        elif self.status in FINISHED:
            rest = RecipientOutcome.FAILED
        else:
            rest = RecipientOutcome.PENDING
        outcomes: list[tuple[str, RecipientOutcome, Refusal | Skipped | None]] = []
        for email in dict.fromkeys([*envelope, *(self.delivered or ()), *refused]):
            if email in refused:
                outcomes.append((email, RecipientOutcome.REFUSED, refused[email]))
            elif email in skipped and email not in delivered:
                outcomes.append((email, RecipientOutcome.SUPPRESSED, skipped[email]))
            else:
                state = RecipientOutcome.DELIVERED if email in delivered else rest
                outcomes.append((email, state, None))
        return outcomes


@dataclass(frozen=True)
class NewNotification:
    """A validated request about to be stored."""

    id: str
    request: NotificationRequest
    caller: str
    message_id: str
    status: Status
    created_at: float
    due_at: float
    request_id: str | None

    @classmethod
    def from_request(
        cls, request: NotificationRequest, *, sender: Address, caller: str
    ) -> NewNotification:
        now = time.time()
        send_at = request.send_at.timestamp() if request.send_at else now
        # The Message-ID is fixed at acceptance so that a retried message keeps it.
        message_id = f"<{new_token()}@{sender.smtp_email.rpartition('@')[2]}>"
        return cls(
            id=new_uuid(),
            request=request,
            caller=caller,
            message_id=message_id,
            status=initial_status(request, accepted_at=now),
            created_at=now,
            due_at=max(send_at, now),
            request_id=request_id.get(),
        )

    def as_notification(self) -> Notification:
        return Notification(
            id=self.id,
            status=self.status,
            caller=self.caller,
            request=self.request,
            message_id=self.message_id,
            created_at=self.created_at,
            updated_at=self.created_at,
            due_at=self.due_at,
            request_id=self.request_id,
        )


@dataclass(frozen=True)
class NotificationFilter:
    """What `search` narrows a list to; None: no condition. The caller is the store's `owner`
    argument, not a field here: it is the one place whose notifications a list may show."""

    status: Status | None = None
    tag: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    template: str | None = None  # the template's name, exactly
    error_contains: str | None = None  # a substring of last_error, case and all
    # an address the mail went to (to, cc or bcc), whole, as normalised when accepted; ASCII
    # letters match either case (see `recipient_key`)
    recipient: str | None = None

    @staticmethod
    def epoch(moment: datetime | None) -> float | None:
        return None if moment is None else moment.timestamp()

    def recipient_matches(self, notification: Notification) -> bool:
        """Whether `notification` went to `recipient` (True when there is no such condition):
        the stores' SQL answers the same, this is for checking a row in Python."""
        if self.recipient is None:
            return True
        wanted = recipient_key(self.recipient)
        r = notification.request
        return any(recipient_key(a.email) == wanted for a in (*r.to, *r.cc, *r.bcc))


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def recipient_key(email: str) -> str:
    """An address as the recipient filter compares it: ASCII letters in lower case, nothing
    else changed. Both databases' lower() do exactly this (SQLite's always, PostgreSQL's under
    the "C" collation), so the filter means the same on both; other letters compare as they
    are, as email-validator normalised them."""
    return email.translate(_ASCII_LOWER)


# Why an address is on the suppression list.
REASONS = ("hard_bounce", "unsubscribe", "complaint", "manual")


@dataclass(frozen=True)
class Suppression:
    """An address one caller's mail no longer goes to: in one category, or (category None)
    in every category. `address` is kept in lower case: suppressions match without regard
    to case."""

    caller: str
    address: str
    reason: str
    category: str | None = None
    created_at: float = 0.0
