"""The webhook outbox on PostgreSQL: the part of `PostgresStore` that keeps the events owed to
callers and their delivery attempts. Events are written by the store's state changes, in their
statements or transactions; the dispatchers of every process claim (SKIP LOCKED) and finish
them here."""

from __future__ import annotations

from collections.abc import Mapping

from app.store.outbox_rows import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    IN_TURN,
    SCAN_PER_EVENT,
    event_from,
    with_attempts,
)
from app.store.postgres_pool import Connection, PostgresPool
from app.store.postgres_rows import NOW
from app.webhooks.events import EventAttempt, EventStatus, WebhookEvent


class PostgresOutbox:
    _pool: PostgresPool

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
        at most that many of a caller's, counting its `in_flight` ones. Events other workers
        are claiming are skipped (and so are the later ones of their notifications, which
        still see them pending)."""
        if per_caller is None:
            found = await self._pool.run(lambda db: db.fetch(_CLAIM, lease_seconds, limit))
        else:
            busy = dict(in_flight or {})
            found = await self._pool.run(
                lambda db: db.fetch(
                    _CLAIM_SHARED,
                    lease_seconds,
                    limit,
                    list(busy),
                    list(busy.values()),
                    per_caller,
                    limit * SCAN_PER_EVENT,
                )
            )
        return sorted(map(event_from, found), key=lambda e: e.seq)

    async def finish_event(
        self,
        event: WebhookEvent,
        *,
        status: EventStatus,
        attempt: EventAttempt,
        next_attempt_at: float | None,
    ) -> bool:
        """Record one delivery attempt and the state it leaves the event in, in one
        statement; False (nothing recorded) if the claim's lease was taken over."""
        sql = (
            "WITH finished AS (UPDATE webhook_events SET status = $3, next_attempt_at = $4,"
            " attempts = attempts + 1, last_error = $7, delivered_at = $8"
            " WHERE id = $1 AND lease = $2 AND status = 'pending' RETURNING id)"
            f" INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS})"
            " SELECT id, $5, $6, $7, $9 FROM finished RETURNING true"
        )
        applied = await self._pool.run(
            lambda db: db.fetchval(
                sql,
                event.id,
                event.lease,
                status.value,
                next_attempt_at,
                attempt.at,
                attempt.status_code,
                attempt.error,
                attempt.at if status is EventStatus.DELIVERED else None,
                attempt.duration_ms,
            )
        )
        return bool(applied)

    async def events(self, notification_id: str, *, owner: str | None) -> list[WebhookEvent]:
        """The notification's events, oldest first, with their attempts; empty if it has none,
        is unknown, or is not `owner`'s."""

        async def select(db: Connection) -> list[WebhookEvent]:
            found = await db.fetch(
                f"SELECT {EVENT_COLUMNS} FROM webhook_events"
                " WHERE notification_id = $1 AND ($2::text IS NULL OR caller = $2) ORDER BY seq",
                notification_id,
                owner,
            )
            events = [event_from(row) for row in found]
            attempts = await db.fetch(
                f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts"
                " WHERE event_id = ANY($1::text[]) ORDER BY id",
                [e.id for e in events],
            )
            return with_attempts(events, list(attempts))

        return await self._pool.run(select)


# ANY(ARRAY(…)): the locking subquery runs once, whatever join the planner picks
_CLAIM = (
    f"UPDATE webhook_events SET lease = lease + 1, next_attempt_at = {NOW} + $1"
    " WHERE seq = ANY(ARRAY(SELECT e.seq FROM webhook_events e"
    f" WHERE e.next_attempt_at <= {NOW} AND {IN_TURN}"
    " ORDER BY e.next_attempt_at, e.seq LIMIT $2 FOR UPDATE OF e SKIP LOCKED))"
    f" RETURNING {EVENT_COLUMNS}"
)
# The earliest due events of callers with room ($3, $4: callers and their in-flight counts),
# ranked per caller, and of those only as many as each caller's room. The candidates are locked
# where they are chosen (a window function cannot be), so other workers skip them, and a row
# another worker claimed meanwhile is judged again as it is now (no longer due).
_CLAIM_SHARED = (
    f"UPDATE webhook_events SET lease = lease + 1, next_attempt_at = {NOW} + $1"
    " WHERE seq = ANY(ARRAY(SELECT seq FROM (SELECT c.seq, c.next_attempt_at, c.busy,"
    " row_number() OVER (PARTITION BY c.caller ORDER BY c.next_attempt_at, c.seq) AS nth"
    " FROM (SELECT e.seq, e.caller, e.next_attempt_at, coalesce(b.n, 0) AS busy"
    " FROM webhook_events e"
    " LEFT JOIN unnest($3::text[], $4::int[]) AS b(caller, n) ON b.caller = e.caller"
    f" WHERE e.next_attempt_at <= {NOW} AND {IN_TURN} AND coalesce(b.n, 0) < $5"
    " ORDER BY e.next_attempt_at, e.seq LIMIT $6 FOR UPDATE OF e SKIP LOCKED) c) r"
    " WHERE nth + busy <= $5 ORDER BY next_attempt_at, seq LIMIT $2))"
    f" RETURNING {EVENT_COLUMNS}"
)
