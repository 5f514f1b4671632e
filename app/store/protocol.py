"""What the rest of the service may ask of a store: the one interface that the SQLite store
(`sqlite`) and the PostgreSQL store (`postgres`) both implement, and the contract test suite
checks on both.

Every method raises StoreUnavailable (HTTP 503, try again) when the database cannot serve it,
never hangs past the store's timeout, and works again by itself once the database is back.

A state change into a status worth telling (`app.webhooks.events.EVENT_TYPES`) of a
notification with a callback_url writes its webhook event in the same transaction
(`finish_attempt`, `cancel`): the outbox that `claim_events` hands out.

A notification belongs to the caller that created it. The methods that show or act on
notifications by request of a caller (`get`, `search`, `cancel`, `retry`,
`sent_message`, `events`) take an `owner`: only that
caller's notifications exist for them, another's reads as unknown. `owner=None` means every
caller's, for admin keys only. It is a required argument so that no call site forgets it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from app.api.schemas import Status
from app.store.records import (
    AttemptRecord,
    NewNotification,
    Notification,
    NotificationFilter,
    Refusal,
    Skipped,
    Suppression,
)
from app.webhooks.events import EventAttempt, EventStatus, WebhookEvent


class NotificationStore(Protocol):
    async def close(self) -> None:
        """Stop listening and close every connection."""

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the database answers with our schema in place."""

    def listen(self, on_work: Callable[[], None]) -> None:
        """Call `on_work` whenever due work was stored, by any process sharing the database,
        until `close`. Best effort: the worker's polling stays the fallback. A store that only
        one process uses (SQLite) does nothing here: the process wakes its own worker."""

    # -- accepting ------------------------------------------------------------------------

    async def create(
        self,
        new: NewNotification,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        idempotency_ttl: float = 0,
    ) -> tuple[Notification, bool]:
        """Store one notification (durably, before returning); with an idempotency key used
        within the TTL, return the earlier notification and True instead. Raises
        IdempotencyConflict when the key was used for a different request."""
        ...

    async def create_many(self, batch: Sequence[NewNotification]) -> None:
        """Store all of `batch` or none of it."""

    async def forget_idempotency_keys(self, *, older_than: float) -> None: ...

    # -- reading --------------------------------------------------------------------------

    async def get(self, notification_id: str, *, owner: str | None) -> Notification | None:
        """None if there is no such notification, or it is not `owner`'s."""
        ...

    async def search(
        self,
        query: NotificationFilter,
        *,
        owner: str | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[Notification]:
        """`owner`'s notifications (None: everyone's), newest first; `after` is the
        (created_at, id) of the last row of the previous page."""
        ...

    async def count_waiting(self) -> int:
        """Notifications not finished yet: scheduled, queued, deferred or sending."""
        ...

    async def count_by_status(self) -> dict[str, int]: ...

    # -- delivering -----------------------------------------------------------------------

    async def claim(self, notification_id: str, *, lease_seconds: float) -> Notification | None:
        """Take one queued notification for sending under a new lease; None if it is not (or
        no longer) queued."""
        ...

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Notification]:
        """Take up to `limit` due notifications, the longest due first, each under a new
        lease: a claimed row is handed to no one else until its lease expires."""
        ...

    async def release(self, notification: Notification, *, at: float) -> bool:
        """Give a claimed notification back untouched, due at `at`; False (nothing changed)
        if its lease was taken over by a newer claim."""
        ...

    async def finish_attempt(
        self,
        notification: Notification,
        *,
        status: Status,
        attempt: AttemptRecord,
        subject: str | None,
        pending: list[str],
        delivered: list[str],
        refused: list[Refusal],
        last_error: str | None,
        next_attempt_at: float | None,
        message: bytes | None = None,
        suppressed: list[Skipped] | None = None,
    ) -> bool:
        """Record one attempt and the state it leaves the notification in, atomically;
        False (nothing recorded) if the claim's lease was taken over. `message`: the bytes
        this attempt gave the SMTP server, kept (in the same statement) for `sent_message`;
        None keeps what an earlier attempt stored. `suppressed`: every recipient skipped as
        suppressed so far (None keeps what is stored). This is also how a notification ends
        `suppressed`: one attempt that sent nothing."""
        ...

    async def cancel(
        self, notification_id: str, *, owner: str | None
    ) -> tuple[bool, Status | None]:
        """(True, cancelled) or (False, the status that forbids it; None if unknown or not
        `owner`'s, and then nothing changed)."""
        ...

    async def retry(self, notification_id: str, *, owner: str | None) -> tuple[bool, Status | None]:
        """Queue a failed notification again with a new attempt budget and the same
        Message-ID: (True, queued), or (False, the status that forbids it; None if unknown or
        not `owner`'s, and then nothing changed). Of concurrent retries, one applies."""
        ...

    async def sent_message(self, notification_id: str, *, owner: str | None) -> bytes | None:
        """The message bytes the last attempt that sent gave the SMTP server; None if no
        attempt sent it (or the notification is unknown or not `owner`'s)."""
        ...

    # -- suppressions ---------------------------------------------------------------------
    # Per caller; an entry's category None means every category. Addresses match without
    # regard to case (kept in lower case).

    async def suppress(self, entries: Sequence[Suppression]) -> None:
        """Add each entry; one already there keeps its reason and time (idempotent)."""

    async def put_suppression(self, entry: Suppression) -> bool:
        """Add one entry, or give the one already there this reason; True if it is new."""
        ...

    async def unsuppress(
        self, address: str, *, owner: str | None, category: str | None, every_category: bool
    ) -> int:
        """Remove `address` from `owner`'s list (None: every caller's): its entry in
        `category` (None: the one for every category), or all its entries with
        `every_category`. How many were removed."""
        ...

    async def suppressions(
        self,
        *,
        owner: str | None,
        address: str | None = None,
        reason: str | None = None,
        category: str | None = None,
        limit: int,
        after: tuple[str, str, str] | None = None,
    ) -> list[Suppression]:
        """`owner`'s entries (None: everyone's), by address, caller and category ('' for
        None); `after` is that key of the last entry of the previous page."""
        ...

    async def has_suppressions(self, caller: str) -> bool:
        """Whether `caller`'s list holds any entry."""
        ...

    async def suppressed_among(
        self, caller: str, addresses: Sequence[str], *, category: str | None
    ) -> dict[str, Suppression]:
        """Which of `addresses` `caller`'s mail of `category` must skip, by lower-case
        address: entries for every category, and for `category` itself."""

    # -- webhooks -----------------------------------------------------------------------

    async def claim_events(
        self,
        *,
        limit: int,
        lease_seconds: float,
        per_caller: int | None = None,
        in_flight: Mapping[str, int] | None = None,
    ) -> list[WebhookEvent]:
        """Take up to `limit` due webhook events, each under a new lease: pending, due, and
        no earlier event of the same notification still pending (so at most one of a
        notification's events at a time, in order), earliest due first. With `per_caller`, at
        most that many of one caller's, counting the `in_flight` ones it already has (by
        caller): a caller at its share gets none, and the others' due events are taken
        instead, however many of its own are due before them."""
        ...

    async def finish_event(
        self,
        event: WebhookEvent,
        *,
        status: EventStatus,
        attempt: EventAttempt,
        next_attempt_at: float | None,
    ) -> bool:
        """Record one delivery attempt of a claimed event and the state it leaves it in
        (pending again at `next_attempt_at`, delivered, or failed: given up); False (nothing
        recorded) if the claim's lease was taken over."""
        ...

    async def events(self, notification_id: str, *, owner: str | None) -> list[WebhookEvent]:
        """The notification's webhook events, oldest first, each with its attempts; empty if
        it has none (or is unknown, or not `owner`'s)."""
        ...

    # -- workers ------------------------------------------------------------------------

    async def record_heartbeat(self, worker: str) -> None:
        """`worker` is alive now; workers silent for long are forgotten."""
        ...

    async def last_heartbeat(self, *, host: str | None = None) -> float | None:
        """When a worker last beat (epoch seconds), or None; with `host`, only that machine's."""
        ...
