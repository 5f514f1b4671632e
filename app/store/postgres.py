"""The notification store on PostgreSQL: the same operations and records as the SQLite store,
for several API and worker processes sharing one database.

The notification row is the job. Claims are one UPDATE over `FOR UPDATE SKIP LOCKED` rows, so
workers on different machines never take the same row and never wait for each other. Each claim
takes a new lease (the row's `lease` counter plus one, a fencing token); `finish_attempt` and
`release` apply only while the row is still `sending` under that lease, so a worker whose
lease expired and whose row was claimed again can never overwrite the newer attempt. Lease and
due times are judged by the database's clock, one clock for all machines. Storing due work
announces it with NOTIFY (see `postgres_announcer`), so listening workers (`postgres_listener`)
start it at once instead of at their next poll.

`next_attempt_at` means "due at", as in the SQLite store. The suppression list is kept by
`postgres_suppressions`. The schema is in `migrations/`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence

from pydantic_core import to_json

from app.api.schemas import Status
from app.errors import IdempotencyConflict, StoreUnavailable
from app.ops.logs import event
from app.store import raw_message
from app.store.postgres_announcer import WorkAnnouncer
from app.store.postgres_group import InsertGroup
from app.store.postgres_listener import WorkListener
from app.store.postgres_outbox import PostgresOutbox
from app.store.postgres_pool import Connection, PostgresPool
from app.store.postgres_rows import (
    COLUMNS,
    INSERT,
    NOW,
    LeasedNotification,
    insert_values,
    leased,
    notification_from,
    why_unreadable,
)
from app.store.postgres_suppressions import PostgresSuppressions, lift_hard_bounces
from app.store.records import (
    HEARTBEAT_MEMORY_SECONDS,
    WAITING,
    AttemptRecord,
    NewNotification,
    Notification,
    NotificationFilter,
    Refusal,
    Skipped,
    recipient_key,
)
from app.store.rows import recipient_attempts, refused_emails
from app.webhooks.events import (
    NewEvent,
    event_for,
    event_for_attempt,
)

log = logging.getLogger("app.store.postgres")

_UNFINISHED = ", ".join(f"'{s}'" for s in (*WAITING, Status.SENDING))
# The row of id $1 if it belongs to the caller $2; to anyone's if $2 is NULL (an admin's view).
_OWNED = "id = $1 AND ($2::text IS NULL OR caller = $2)"
# Rows whose request may have the recipient: the request is JSON text (not jsonb, see 0001),
# which a cast could fail on (a row edited by hand), so this only looks for the address's JSON
# string in it, and `_page` checks each row found. A scan of the owner's rows in the index's
# order, like the SQLite store's; no index of addresses.
_MAY_HAVE_RECIPIENT = 'strpos(lower(request COLLATE "C"), {}) > 0'


class PostgresStore(PostgresSuppressions, PostgresOutbox):
    def __init__(self, pool: PostgresPool, *, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._announcer = WorkAnnouncer(pool)
        self._inserts = InsertGroup(pool)
        self._listener: WorkListener | None = None

    @classmethod
    async def open(
        cls, dsn: str, *, database_timeout: float = 5.0, pool_size: int = 10
    ) -> PostgresStore:
        """Every call raises StoreUnavailable within `database_timeout` (DATABASE_TIMEOUT)
        seconds when the database cannot serve it. Opening does not connect yet."""
        pool = await PostgresPool.open(dsn, database_timeout=database_timeout, size=pool_size)
        return cls(pool, dsn=dsn)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self._announcer.close()
        await self._pool.close()

    def listen(self, on_work: Callable[[], None]) -> None:
        """Call `on_work` when any process stores due work (LISTEN/NOTIFY, on a connection of
        its own that reconnects by itself), and after each (re)connection."""
        if self._listener is None:
            self._listener = WorkListener(self._dsn, on_work, database_timeout=self._pool.timeout)
            self._listener.start()

    async def ping(self) -> None:
        await self._pool.run(lambda db: db.fetch("SELECT 1 FROM notifications LIMIT 1"))

    # -- accepting ------------------------------------------------------------------------

    async def create(
        self,
        new: NewNotification,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        idempotency_ttl: float = 0,
    ) -> tuple[Notification, bool]:
        """Store one notification; with an idempotency key, return the earlier one instead
        (and True) when the key was used within the TTL. Raises IdempotencyConflict when the
        key was used for a different request. Safe across processes: the key's row is taken
        with INSERT … ON CONFLICT, so of two concurrent requests with one key, one inserts
        and the other waits for it and then finds its notification."""
        if idempotency_key is None:
            await self._inserts.insert(new)
            self._stored([new])
            return new.as_notification(), False

        async def create(db: Connection) -> tuple[Notification, bool]:
            async with db.transaction():
                taken = await db.fetchval(
                    "INSERT INTO idempotency_keys AS k (caller, key, fingerprint, notification_id,"
                    " created_at) VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (caller, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
                    " notification_id = excluded.notification_id, created_at = excluded.created_at"
                    " WHERE k.created_at <= $6 RETURNING true",
                    new.caller,
                    idempotency_key,
                    fingerprint,
                    new.id,
                    new.created_at,
                    time.time() - idempotency_ttl,
                )
                if taken:
                    await db.execute(INSERT, *insert_values(new))
                    return new.as_notification(), False
                row = await db.fetchrow(
                    "SELECT fingerprint, notification_id FROM idempotency_keys"
                    " WHERE caller = $1 AND key = $2",
                    new.caller,
                    idempotency_key,
                )
            assert row is not None  # ON CONFLICT found it and locked it: it is there
            if row["fingerprint"] != fingerprint:
                raise IdempotencyConflict(row["notification_id"])
            earlier = await _select(db, row["notification_id"], owner=new.caller)
            assert earlier is not None  # the key row is written with its notification
            return earlier, True

        notification, replayed = await self._pool.run(create)
        if not replayed:
            self._stored([new])
        return notification, replayed

    async def create_many(self, batch: Sequence[NewNotification]) -> None:
        """All or none, in one transaction and one round trip."""
        if batch:
            await self._pool.run(
                lambda db: db.executemany(INSERT, [insert_values(n) for n in batch])
            )
            self._stored(batch)

    def _stored(self, batch: Sequence[NewNotification]) -> None:
        if any(n.status is Status.QUEUED for n in batch):
            self._announcer.announce()

    async def forget_idempotency_keys(self, *, older_than: float) -> None:
        await self._pool.run(
            lambda db: db.execute("DELETE FROM idempotency_keys WHERE created_at < $1", older_than)
        )

    # -- reading --------------------------------------------------------------------------

    async def get(self, notification_id: str, *, owner: str | None) -> Notification | None:
        """None if there is no such notification, or it is not `owner`'s (None: anyone's)."""

        async def select(db: Connection) -> Notification | None:
            notification = await _select(db, notification_id, owner=owner)
            if notification is not None:
                notification.attempts.extend((await _attempts(db, [notification_id]))[0])
            return notification

        return await self._pool.run(select)

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

        async def select(db: Connection) -> list[Notification]:
            rows = await _page(db, query, owner=owner, limit=limit, after=after)
            for notification, attempts in zip(
                rows, await _attempts(db, [n.id for n in rows]), strict=True
            ):
                notification.attempts.extend(attempts)
            return rows

        return await self._pool.run(select)

    async def count_waiting(self) -> int:
        """Notifications not finished yet: scheduled, queued, deferred or sending."""
        sql = f"SELECT count(*) FROM notifications WHERE status IN ({_UNFINISHED})"
        waiting: int = await self._pool.run(lambda db: db.fetchval(sql))
        return waiting

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._pool.run(
            lambda db: db.fetch("SELECT status, count(*) FROM notifications GROUP BY status")
        )
        return {status: n for status, n in rows}

    # -- delivering -----------------------------------------------------------------------

    async def claim(
        self, notification_id: str, *, lease_seconds: float
    ) -> LeasedNotification | None:
        """Take one queued notification for sending; None if it is not (or no longer) queued."""
        claimed = await self._claim("id = $2 AND status = 'queued'", lease_seconds, notification_id)
        return next(iter(claimed), None)

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[LeasedNotification]:
        """Take up to `limit` notifications that are due, earliest first: queued or scheduled
        ones whose time has come, deferred ones ready for a retry, and `sending` ones whose
        lease expired (their worker died). Rows other workers are claiming are skipped."""
        return await self._claim(
            # ANY(ARRAY(…)): the locking subquery runs once, whatever join the planner picks
            "id = ANY(ARRAY(SELECT id FROM notifications"
            f" WHERE status IN ({_UNFINISHED}) AND next_attempt_at <= {NOW}"
            " ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            lease_seconds,
            limit,
        )

    async def _claim(
        self, condition: str, lease_seconds: float, argument: object
    ) -> list[LeasedNotification]:
        sql = (
            "UPDATE notifications SET status = 'sending', lease = lease + 1,"
            f" next_attempt_at = {NOW} + $1, updated_at = {NOW}"
            f" WHERE {condition} RETURNING {COLUMNS}"
        )
        rows = await self._pool.run(lambda db: db.fetch(sql, lease_seconds, argument))
        claimed: list[LeasedNotification] = []
        broken: list[tuple[str, int, str]] = []
        for row in rows:  # one row that no longer parses must not hold up the others
            try:
                claimed.append(leased(row))
            except Exception as exc:
                broken.append((row["id"], row["lease"], why_unreadable(exc)))
        if broken:
            await self._fail_unreadable(broken)
        return claimed

    async def _fail_unreadable(self, rows: list[tuple[str, int, str]]) -> None:
        """Fail rows that can no longer be read, with the reason; if even that cannot be
        written now, their lease expires and the next claim tries again."""
        for row_id, _, reason in rows:
            event(log, "notification.unreadable", level=logging.ERROR, id=row_id, reason=reason)
        with contextlib.suppress(StoreUnavailable):
            await self._pool.run(
                lambda db: db.executemany(
                    "UPDATE notifications SET status = 'failed', last_error = $3,"
                    f" next_attempt_at = NULL, updated_at = {NOW} WHERE id = $1 AND lease = $2",
                    rows,
                )
            )

    async def release(self, notification: LeasedNotification, *, at: float) -> bool:
        """Give a claimed notification back untouched, due at `at` (no attempt is recorded).
        False if the claim was no longer ours (its lease expired and it was claimed again)."""
        due = await self._pool.run(
            lambda db: db.fetchval(
                "UPDATE notifications SET status = CASE WHEN attempts > 0 THEN 'deferred'"
                f" ELSE 'queued' END, next_attempt_at = $3, updated_at = {NOW}"
                " WHERE id = $1 AND lease = $2 AND status = 'sending'"
                f" RETURNING next_attempt_at <= {NOW}",
                notification.id,
                notification.lease,
                at,
            )
        )
        if due:
            self._announcer.announce()
        return due is not None

    async def finish_attempt(
        self,
        notification: LeasedNotification,
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
        """Record one attempt and the state it leaves the notification in, with the webhook
        event it owes (if any), in one statement, if this claim still holds the lease; False
        (and nothing written) if it was taken over by a newer claim or already recorded."""
        owed = event_for_attempt(
            notification,
            status=status,
            subject=subject,
            pending=pending,
            delivered=delivered,
            refused=refused,
            last_error=last_error,
            suppressed=suppressed,
            now=time.time(),
        )
        sql = (
            "WITH finished AS (UPDATE notifications SET status = $3,"
            " subject = COALESCE($4, subject), pending = $5, refused = $6, last_error = $7,"
            f" next_attempt_at = $8, updated_at = {NOW}, delivered = $14,"
            f" sent_at = CASE WHEN $3 = 'sent' THEN {NOW} END,"
            " attempts = attempts + 1, raw_message = COALESCE($15, raw_message),"
            " suppressed = COALESCE($17, suppressed)"
            " WHERE id = $1 AND lease = $2 AND status = 'sending' RETURNING id)"
            f"{_EVENT_AFTER_FINISH if owed else ''}"
            " INSERT INTO attempts"
            " (notification_id, at, outcome, smtp_code, detail, duration_ms, recipients)"
            " SELECT id, $9, $10, $11, $12, $13, $16 FROM finished RETURNING true"
        )
        applied = await self._pool.run(
            lambda db: db.fetchval(
                sql,
                notification.id,
                notification.lease,
                status.value,
                subject,
                json.dumps(pending),
                json.dumps([r.as_json() for r in refused]),
                last_error,
                next_attempt_at,
                attempt.at,
                attempt.outcome,
                attempt.smtp_code,
                attempt.detail,
                attempt.duration_ms,
                json.dumps(delivered),
                raw_message.pack(message),
                json.dumps([r.as_json() for r in attempt.recipients]),
                None if suppressed is None else json.dumps([s.as_json() for s in suppressed]),
                *_event_values(owed),
            )
        )
        return bool(applied)

    async def cancel(
        self, notification_id: str, *, owner: str | None
    ) -> tuple[bool, Status | None]:
        """(True, cancelled) or (False, the status that forbids it; None if unknown or not
        `owner`'s)."""

        async def cancel(db: Connection) -> tuple[bool, Status | None]:
            async with db.transaction():
                row = await db.fetchrow(
                    f"UPDATE notifications SET status = 'cancelled', next_attempt_at = NULL,"
                    f" updated_at = {NOW} WHERE {_OWNED}"
                    f" AND status IN ('scheduled', 'queued', 'deferred') RETURNING {COLUMNS}",
                    notification_id,
                    owner,
                )
                if row is not None:
                    # the row was just read back as the API shows it: it parses
                    owed = event_for(notification_from(row), now=time.time())
                    if owed is not None:
                        await db.execute(
                            _INSERT_EVENT, owed.id, owed.notification_id, *_event_values(owed)[1:]
                        )
                    return True, Status.CANCELLED
            status = await db.fetchval(
                f"SELECT status FROM notifications WHERE {_OWNED}", notification_id, owner
            )
            return False, None if status is None else Status(status)

        return await self._pool.run(cancel)

    async def retry(self, notification_id: str, *, owner: str | None) -> tuple[bool, Status | None]:
        """(True, queued) or (False, the status that forbids it; None if unknown or not
        `owner`'s). Conditional on `failed`, so of two concurrent retries one applies (the
        second waits for the first's row lock, then finds the row queued); the hard bounces its
        refusals put on the suppression list are lifted with it."""

        async def retry(db: Connection) -> tuple[bool, Status | None]:
            async with db.transaction():
                failed = await db.fetchrow(
                    f"SELECT caller, refused FROM notifications WHERE {_OWNED}"
                    " AND status = 'failed' FOR UPDATE",
                    notification_id,
                    owner,
                )
                if failed is None:
                    found = await db.fetchval(
                        f"SELECT status FROM notifications WHERE {_OWNED}", notification_id, owner
                    )
                    return False, None if found is None else Status(found)
                await db.execute(
                    "UPDATE notifications SET status = 'queued', attempts = 0, pending = NULL,"
                    " refused = '[]', suppressed = NULL, last_error = NULL,"
                    f" next_attempt_at = {NOW}, updated_at = {NOW}, retried_at = {NOW}"
                    " WHERE id = $1",
                    notification_id,
                )
                await lift_hard_bounces(db, failed["caller"], refused_emails(failed["refused"]))
                return True, Status.QUEUED

        retried, status = await self._pool.run(retry)
        if retried:
            self._announcer.announce()
        return retried, status

    async def sent_message(self, notification_id: str, *, owner: str | None) -> bytes | None:
        """The message bytes the last sending attempt gave the SMTP server; None if none did."""
        stored = await self._pool.run(
            lambda db: db.fetchval(
                f"SELECT raw_message FROM notifications WHERE {_OWNED}", notification_id, owner
            )
        )
        return raw_message.unpack(stored)

    # -- workers --------------------------------------------------------------------------

    async def record_heartbeat(self, worker: str) -> None:
        """`worker` is alive now, by its own machine's clock (the one `notifier health` on that
        machine compares with); workers long silent are forgotten."""
        now = time.time()
        await self._pool.run(
            lambda db: db.execute(
                "WITH beat AS (INSERT INTO heartbeats (worker, beat_at) VALUES ($1, $2)"
                " ON CONFLICT (worker) DO UPDATE SET beat_at = excluded.beat_at)"
                " DELETE FROM heartbeats WHERE beat_at < $3",
                worker,
                now,
                now - HEARTBEAT_MEMORY_SECONDS,
            )
        )

    async def last_heartbeat(self, *, host: str | None = None) -> float | None:
        """When a worker last beat (epoch seconds), or None if none did; with `host`, only the
        workers on that machine (named `host:…`)."""
        args: tuple[object, ...] = ()
        if host is None:
            sql = "SELECT max(beat_at) FROM heartbeats"
        else:
            prefix = f"{host}:"
            sql = "SELECT max(beat_at) FROM heartbeats WHERE substr(worker, 1, $1) = $2"
            args = (len(prefix), prefix)
        beat_at: float | None = await self._pool.run(lambda db: db.fetchval(sql, *args))
        return beat_at


_INSERT_EVENT = (
    "INSERT INTO webhook_events (id, notification_id, caller, type, url, body, created_at,"
    " status, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $7)"
)
# finish_attempt's event, inserted by the same statement only if the attempt was recorded
# (`finished` holds the notification's id then); its values are $18 to $23
_EVENT_AFTER_FINISH = (
    ", owed AS (INSERT INTO webhook_events (id, notification_id, caller, type, url, body,"
    " created_at, status, next_attempt_at)"
    " SELECT $18, id, $19, $20, $21, $22, $23, 'pending', $23 FROM finished)"
)


def _event_values(event: NewEvent | None) -> tuple[object, ...]:
    """The event's values for _EVENT_AFTER_FINISH (after the notification's id), or none."""
    if event is None:
        return ()
    return (event.id, event.caller, event.type, event.url, event.body, event.created_at)


def search_sql(
    query: NotificationFilter, *, owner: str | None, limit: int, after: tuple[float, str] | None
) -> tuple[str, list[object]]:
    """The statement (and its parameters) of `PostgresStore.search`. One caller's pages walk
    the index notifications_by_caller (caller, created_at, id) in its order: no sort, and no
    row of another caller read, however big the table (tests.test_store_postgres checks it)."""
    filters = [
        ("caller = {}", owner),
        ("status = {}", query.status),
        ("template = {}", query.template),
        ("tags @> ARRAY[{}::text]", query.tag),
        (_MAY_HAVE_RECIPIENT, _recipient_needle(query.recipient)),
        ("created_at >= {}", query.created_after),
        ("created_at < {}", query.created_before),
        ("strpos(last_error, {}) > 0", query.error_contains),
    ]
    where: list[str] = ["true"]
    params: list[object] = []
    for sql, value in filters:
        if value is not None:
            params.append(value)
            where.append(sql.format(f"${len(params)}"))
    if after is not None:
        params.extend(after)
        where.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
    params.append(limit)
    sql = (
        f"SELECT {COLUMNS} FROM notifications WHERE {' AND '.join(where)}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(params)}"
    )
    return sql, params


async def _page(
    db: Connection,
    query: NotificationFilter,
    *,
    owner: str | None,
    limit: int,
    after: tuple[float, str] | None,
) -> list[Notification]:
    """Up to `limit` rows of `search`. The recipient condition is answered in two steps: the
    statement keeps the rows whose request holds the address as a JSON string somewhere, and
    `recipient_matches` keeps those that have it in to, cc or bcc (not only in the context,
    say). When that drops rows, the page is filled from the rows after the last one read."""
    found: list[Notification] = []
    while True:
        sql, params = search_sql(query, owner=owner, limit=limit, after=after)
        batch = [notification_from(row) for row in await db.fetch(sql, *params)]
        found += filter(query.recipient_matches, batch)
        if len(batch) < limit or len(found) >= limit:
            return found[:limit]
        after = (batch[-1].created_at, batch[-1].id)


def _recipient_needle(recipient: str | None) -> str | None:
    """The address as the request's JSON text spells it (pydantic wrote both), lower-cased
    as `recipient_key` does, which lower() under the "C" collation matches."""
    if recipient is None:
        return None
    return recipient_key(to_json(recipient).decode())


async def _select(
    db: Connection, notification_id: str, *, owner: str | None
) -> Notification | None:
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM notifications WHERE {_OWNED}", notification_id, owner
    )
    return None if row is None else notification_from(row)


async def _attempts(db: Connection, ids: list[str]) -> list[list[AttemptRecord]]:
    """The attempts of each notification in `ids`, oldest first, in the order of `ids`."""
    found: dict[str, list[AttemptRecord]] = {i: [] for i in ids}
    if ids:
        for row in await db.fetch(
            "SELECT notification_id, at, outcome, smtp_code, detail, duration_ms, recipients"
            " FROM attempts WHERE notification_id = ANY($1::text[]) ORDER BY id",
            ids,
        ):
            values = dict(row)
            values["recipients"] = recipient_attempts(values["recipients"])
            found[values.pop("notification_id")].append(AttemptRecord(**values))
    return [found[i] for i in ids]
