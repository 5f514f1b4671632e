"""The webhook outbox on the SQLite file: the part of `SqliteStore` that keeps the events
owed to callers and their delivery attempts. Events are written by the store's state changes,
in their transactions (`insert_event`); the dispatcher claims and finishes them here."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping

from app.store.outbox_rows import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    IN_TURN,
    SCAN_PER_EVENT,
    event_from,
    with_attempts,
)
from app.store.sqlite_writer import Database
from app.webhooks.events import EventAttempt, EventStatus, NewEvent, WebhookEvent


class SqliteOutbox:
    _db: Database
    _reads: Database

    async def claim_events(
        self,
        *,
        limit: int,
        lease_seconds: float,
        per_caller: int | None = None,
        in_flight: Mapping[str, int] | None = None,
    ) -> list[WebhookEvent]:
        """Take up to `limit` due webhook events under a new lease each, earliest due first;
        none while an earlier event of its notification is still pending; with `per_caller`,
        at most that many of a caller's, counting its `in_flight` ones."""
        now = time.time()
        args: tuple[object, ...]
        if per_caller is None:
            sql, args = _CLAIM, (now + lease_seconds, now, limit)
        else:
            busy = json.dumps(dict(in_flight or {}))
            scan = limit * SCAN_PER_EVENT
            sql = _CLAIM_SHARED
            args = (now + lease_seconds, busy, now, per_caller, scan, per_caller, limit)

        def claim(db: sqlite3.Connection) -> list[WebhookEvent]:
            found = db.execute(sql, args).fetchall()
            return sorted(map(event_from, found), key=lambda e: e.seq)

        return await self._db.write(claim)

    async def finish_event(
        self,
        event: WebhookEvent,
        *,
        status: EventStatus,
        attempt: EventAttempt,
        next_attempt_at: float | None,
    ) -> bool:
        """Record one delivery attempt and the state it leaves the event in; False (nothing
        recorded) if the claim's lease was taken over."""

        def finish(db: sqlite3.Connection) -> bool:
            changed: int = db.execute(
                "UPDATE webhook_events SET status = ?, next_attempt_at = ?,"
                " attempts = attempts + 1, last_error = ?, delivered_at = ?"
                " WHERE id = ? AND lease = ? AND status = 'pending'",
                (
                    status,
                    next_attempt_at,
                    attempt.error,
                    attempt.at if status is EventStatus.DELIVERED else None,
                    event.id,
                    event.lease,
                ),
            ).rowcount
            if changed != 1:
                return False
            db.execute(
                f"INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (event.id, attempt.at, attempt.status_code, attempt.error, attempt.duration_ms),
            )
            return True

        return await self._db.write(finish)

    async def events(self, notification_id: str, *, owner: str | None) -> list[WebhookEvent]:
        """The notification's events, oldest first, with their attempts; empty if it has none,
        is unknown, or is not `owner`'s."""

        def select(db: sqlite3.Connection) -> list[WebhookEvent]:
            found = [
                event_from(row)
                for row in db.execute(
                    f"SELECT {EVENT_COLUMNS} FROM webhook_events"
                    " WHERE notification_id = ? AND (? IS NULL OR caller = ?) ORDER BY seq",
                    (notification_id, owner, owner),
                )
            ]
            attempts = db.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE event_id IN"
                " (SELECT id FROM webhook_events WHERE notification_id = ?) ORDER BY id",
                (notification_id,),
            ).fetchall()
            return with_attempts(found, attempts)

        return await self._reads.read(select)


_CLAIM = (
    "UPDATE webhook_events SET lease = lease + 1, next_attempt_at = ?"
    " WHERE seq IN (SELECT e.seq FROM webhook_events e INDEXED BY webhook_events_due"
    f" WHERE e.next_attempt_at <= ? AND {IN_TURN}"
    f" ORDER BY e.next_attempt_at, e.seq LIMIT ?) RETURNING {EVENT_COLUMNS}"
)
# The earliest due events of callers with room (`busy`: a JSON object of in-flight counts),
# ranked per caller, and of those only as many as each caller's room.
_CLAIM_SHARED = (
    "UPDATE webhook_events SET lease = lease + 1, next_attempt_at = ?"
    " WHERE seq IN (SELECT seq FROM (SELECT c.seq, c.next_attempt_at, c.busy,"
    " row_number() OVER (PARTITION BY c.caller ORDER BY c.next_attempt_at, c.seq) AS nth"
    " FROM (SELECT e.seq, e.caller, e.next_attempt_at, coalesce(b.value, 0) AS busy"
    " FROM webhook_events e INDEXED BY webhook_events_due"
    " LEFT JOIN json_each(?) b ON b.key = e.caller"
    f" WHERE e.next_attempt_at <= ? AND {IN_TURN} AND coalesce(b.value, 0) < ?"
    " ORDER BY e.next_attempt_at, e.seq LIMIT ?) c)"
    " WHERE nth + busy <= ? ORDER BY next_attempt_at, seq LIMIT ?)"
    f" RETURNING {EVENT_COLUMNS}"
)


def insert_event(db: sqlite3.Connection, event: NewEvent) -> None:
    db.execute(
        "INSERT INTO webhook_events (id, notification_id, caller, type, url, body, created_at,"
        " status, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
        (
            event.id,
            event.notification_id,
            event.caller,
            event.type,
            event.url,
            event.body,
            event.created_at,
            event.created_at,
        ),
    )
