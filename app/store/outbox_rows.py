"""The webhook outbox's rows (tables `webhook_events` and `webhook_attempts`, see migration
0007) read back into records, the same way for both stores.

An event is due when it is pending, its time has come, and no earlier event of the same
notification is still pending: a notification's events go out one at a time, in order. A claim
moves `next_attempt_at` to the lease's end and takes a new `lease` (the fencing token), so no
other worker takes the event until the lease runs out; finishing applies only under that token.
"""

from __future__ import annotations

from typing import Any

from app.webhooks.events import EventAttempt, EventStatus, WebhookEvent

EVENT_COLUMNS = (
    "seq, id, notification_id, caller, type, url, body, created_at, status, attempts, lease,"
    " next_attempt_at, last_error, delivered_at"
)
ATTEMPT_COLUMNS = "event_id, at, status_code, error, duration_ms"
# How many due events a claim with a per-caller share ranks, per event it may take: enough to
# find other callers' behind one whose share is nearly full; callers at their share are not
# among them at all (a dispatcher claims again once it has taken some).
SCAN_PER_EVENT = 4
# Pending and no earlier event of its notification still owed (`e` is the candidate row).
IN_TURN = (
    "e.status = 'pending' AND NOT EXISTS (SELECT 1 FROM webhook_events o"
    " WHERE o.notification_id = e.notification_id AND o.status = 'pending' AND o.seq < e.seq)"
)


def event_from(row: Any) -> WebhookEvent:
    """A row of EVENT_COLUMNS (sqlite3.Row or asyncpg.Record) as a record."""
    return WebhookEvent(
        id=row["id"],
        seq=row["seq"],
        notification_id=row["notification_id"],
        caller=row["caller"],
        type=row["type"],
        url=row["url"],
        body=row["body"],
        created_at=row["created_at"],
        status=EventStatus(row["status"]),
        attempt_count=row["attempts"],
        lease=row["lease"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
    )


def attempt_from(row: Any) -> EventAttempt:
    return EventAttempt(
        at=row["at"],
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )


def with_attempts(events: list[WebhookEvent], rows: list[Any]) -> list[WebhookEvent]:
    """`events` with their attempt rows (of ATTEMPT_COLUMNS, oldest first) attached."""
    by_id = {event.id: event for event in events}
    for row in rows:
        if (event := by_id.get(row["event_id"])) is not None:
            event.attempts.append(attempt_from(row))
    return events
