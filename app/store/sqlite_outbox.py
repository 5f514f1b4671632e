"""The webhook outbox on the SQLite file: the part of `SqliteStore` that keeps the events
owed to callers and their delivery attempts. Events are written by the store's state changes,
in their transactions (`insert_event`); the dispatcher claims and finishes them here."""

from __future__ import annotations

import sqlite3
import time

from app.store.outbox_rows import ATTEMPT_COLUMNS, EVENT_COLUMNS, IN_TURN, event_from, with_attempts
from app.store.sqlite_writer import Database
from app.webhooks.events import EventAttempt, EventStatus, NewEvent, WebhookEvent


class SqliteOutbox:
    _db: Database
    _reads: Database

    async def claim_events(self, *, limit: int, lease_seconds: float) -> list[WebhookEvent]:
        """Take up to `limit` due webhook events under a new lease each, earliest due first;
        none while an earlier event of its notification is still pending."""
        now = time.time()
        sql = (
            "UPDATE webhook_events SET lease = lease + 1, next_attempt_at = ?"
            " WHERE seq IN (SELECT e.seq FROM webhook_events e INDEXED BY webhook_events_due"
            f" WHERE e.next_attempt_at <= ? AND {IN_TURN}"
            f" ORDER BY e.next_attempt_at, e.seq LIMIT ?) RETURNING {EVENT_COLUMNS}"
        )

        def claim(db: sqlite3.Connection) -> list[WebhookEvent]:
            found = db.execute(sql, (now + lease_seconds, now, limit)).fetchall()
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
