"""The notification store on one SQLite file: the embedded default, for one process.

Every write commits durably (see `sqlite_writer`) before it returns, so a caller that got a 202
knows its notification is on disk. Claims are single UPDATE statements, atomic across threads and
processes sharing the file.

`next_attempt_at` means "due at": the send time of a scheduled or queued row, the retry time of a
deferred one, and the lease expiry of a `sending` one; it is NULL exactly when the notification
is finished. So one index, in due order, finds all due work.

Every claim takes a new `lease` (a fencing token: the row's claim counter); finishing or giving
back an attempt applies only while the row is still `sending` under that token, so a worker
whose lease expired can never overwrite what a newer claim did.

The suppression list is kept by `sqlite_suppressions`. The schema is in `migrations/`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from app.api.schemas import Status
from app.errors import IdempotencyConflict
from app.ops.logs import event
from app.store import raw_message, rows
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
from app.store.sqlite_outbox import SqliteOutbox, insert_event
from app.store.sqlite_suppressions import SqliteSuppressions, lift_hard_bounces
from app.store.sqlite_writer import Database
from app.webhooks.events import (
    event_for,
    event_for_attempt,
)

log = logging.getLogger("app.store.sqlite")

_WAITING_SQL = ", ".join(f"'{s}'" for s in (*WAITING, Status.SENDING))
# Only a stored request that is JSON is searched for tags: one that is not must not fail a list.
_HAS_TAG = (
    "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(request) THEN request END, '$.tags')"
    " WHERE value = ?)"
)
# The recipient filter: an address in to, cc or bcc (each an {"email": ...} object), compared
# as records.recipient_key does (SQLite's lower() changes ASCII letters only). CASE keeps
# json_extract off anything that is not an object (a row edited by hand). The caller's rows are
# read in the index's order and each one's request is looked into: no index of addresses.
_IN_PART = (
    "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(request) THEN request END, '$.{}')"
    " WHERE CASE WHEN type = 'object' THEN lower(json_extract(value, '$.email')) END = ?)"
)
_HAS_RECIPIENT = "(" + " OR ".join(_IN_PART.format(part) for part in ("to", "cc", "bcc")) + ")"
# Every column a record is read from: not `raw_message`, which only the download reads.
_COLUMNS = (
    "id, status, template, caller, request_id, request, message_id, subject, pending,"
    " delivered, refused, last_error, next_attempt_at, created_at, updated_at, sent_at,"
    " attempts, lease, retried_at, suppressed"
)
# A failed notification queued again with a new attempt budget (attempts, and MAX_AGE from
# retried_at): every recipient not yet delivered is pending again, those refused for good too.
_RETRY = (
    "UPDATE notifications SET status = 'queued', attempts = 0, pending = NULL, refused = '[]',"
    " suppressed = NULL, last_error = NULL, next_attempt_at = ?, updated_at = ?, retried_at = ?"
)
# Fenced: only the claim that holds the lease may finish or give back the attempt.
_FENCE = "id = ? AND lease = ? AND status = 'sending'"


class SqliteStore(SqliteSuppressions, SqliteOutbox):
    """The file's schema must be at head: `app.store.opening.open_store` migrates it first."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", busy_timeout: float = 5.0) -> None:
        self._db = Database(path, synchronous=synchronous, busy_timeout=busy_timeout)
        # Reads that change nothing go over a connection of their own: in WAL mode they need
        # no lock of the writer's, so a list, a count or a GET never waits behind a commit and
        # never holds up the next one (the queue count once a second cost the accept path
        # about a quarter of its throughput when it shared the writer's connection).
        self._reads = Database(path, synchronous=synchronous, busy_timeout=busy_timeout)

    async def close(self) -> None:
        # each waits for the statement under way on its connection, if any
        await asyncio.to_thread(self._db.close)
        await asyncio.to_thread(self._reads.close)

    def listen(self, on_work: Callable[[], None]) -> None:
        """Nothing to listen to: the process that stores work wakes its own worker."""

    async def ping(self) -> None:
        await self._db.read(lambda db: db.execute("SELECT 1 FROM notifications LIMIT 1").fetchall())

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
        key was used for a different request."""

        def create(db: sqlite3.Connection) -> tuple[Notification, bool]:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT fingerprint, notification_id FROM idempotency_keys"
                    " WHERE caller = ? AND key = ? AND created_at > ?",
                    (new.caller, idempotency_key, time.time() - idempotency_ttl),
                ).fetchone()
                if row is not None:
                    if row["fingerprint"] != fingerprint:
                        raise IdempotencyConflict(row["notification_id"])
                    earlier = _select(db, row["notification_id"], owner=new.caller)
                    assert earlier is not None  # the key row is written with its notification
                    return earlier, True
                db.execute(
                    "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                    (new.caller, idempotency_key, fingerprint, new.id, new.created_at),
                )
            _insert(db, new)
            return new.as_notification(), False

        return await self._db.write(create)

    async def create_many(self, batch: Sequence[NewNotification]) -> None:
        def insert_all(db: sqlite3.Connection) -> None:
            for new in batch:
                _insert(db, new)

        await self._db.write(insert_all)

    async def forget_idempotency_keys(self, *, older_than: float) -> None:
        await self._db.read(
            lambda db: db.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (older_than,)
            )
        )

    # -- reading --------------------------------------------------------------------------

    async def get(self, notification_id: str, *, owner: str | None) -> Notification | None:
        """None if there is no such notification, or it is not `owner`'s (None: anyone's)."""

        def select(db: sqlite3.Connection) -> Notification | None:
            notification = _select(db, notification_id, owner=owner)
            if notification is not None:
                notification.attempts.extend(_attempts(db, [notification_id])[notification_id])
            return notification

        return await self._reads.read(select)

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
        sql, params = search_sql(query, owner=owner, limit=limit, after=after)

        def select(db: sqlite3.Connection) -> list[Notification]:
            found = [_shown(row) for row in db.execute(sql, params)]
            attempts = _attempts(db, [n.id for n in found])
            for notification in found:
                notification.attempts.extend(attempts[notification.id])
            return found

        return await self._reads.read(select)

    async def count_waiting(self) -> int:
        def count(db: sqlite3.Connection) -> int:
            sql = f"SELECT COUNT(*) FROM notifications WHERE status IN ({_WAITING_SQL})"
            waiting: int = db.execute(sql).fetchone()[0]
            return waiting

        return await self._reads.read(count)

    async def count_by_status(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute("SELECT status, COUNT(*) FROM notifications GROUP BY status")
            return {status: n for status, n in rows}

        return await self._reads.read(count)

    # -- delivering -----------------------------------------------------------------------

    async def claim(self, notification_id: str, *, lease_seconds: float) -> Notification | None:
        """Take one queued notification for sending; None if it is not (or no longer) queued."""
        return next(
            iter(
                await self._claim("id = ? AND status = 'queued'", (notification_id,), lease_seconds)
            ),
            None,
        )

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Notification]:
        """Take up to `limit` notifications that are due, the longest due first: queued or
        scheduled ones whose time has come, deferred ones ready for a retry, and `sending` ones
        whose lease expired (their worker died)."""
        return await self._claim(
            # INDEXED BY: fail loudly rather than sort every due row if the index ever changes
            "rowid IN (SELECT rowid FROM notifications INDEXED BY notifications_due_at"
            f" WHERE next_attempt_at <= ? AND status IN ({_WAITING_SQL})"
            " ORDER BY next_attempt_at LIMIT ?)",
            (time.time(), limit),
            lease_seconds,
        )

    async def _claim(
        self, condition: str, params: tuple[object, ...], lease_seconds: float
    ) -> list[Notification]:
        """Claim the matching rows under a new lease each. A row that cannot be read is failed
        with the reason, in the same transaction; the others are handed out."""
        now = time.time()
        sql = (
            "UPDATE notifications SET status = 'sending', lease = lease + 1,"
            f" next_attempt_at = ?, updated_at = ? WHERE {condition} RETURNING rowid, {_COLUMNS}"
        )

        def claim(db: sqlite3.Connection) -> tuple[list[Notification], list[tuple[str, str]]]:
            claimed, unreadable = [], []
            for row in db.execute(sql, (now + lease_seconds, now, *params)).fetchall():
                try:
                    claimed.append(rows.claimed(row))
                except rows.UnreadableRow as exc:
                    db.execute(
                        "UPDATE notifications SET status = 'failed', last_error = ?,"
                        " next_attempt_at = NULL, updated_at = ? WHERE rowid = ?",
                        (str(exc), now, row["rowid"]),
                    )
                    unreadable.append((str(row["id"]), str(exc)))
            return claimed, unreadable

        claimed, unreadable = await self._db.write(claim)
        for notification_id, error in unreadable:
            event(
                log, "notification.unreadable", level=logging.ERROR, id=notification_id, error=error
            )
        return claimed

    async def release(self, notification: Notification, *, at: float) -> bool:
        """Give a claimed notification back untouched, due at `at` (no attempt is recorded);
        False (and nothing changed) if the claim's lease was taken over."""

        def release(db: sqlite3.Connection) -> bool:
            changed: int = db.execute(
                "UPDATE notifications SET"
                " status = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,"
                f" next_attempt_at = ?, updated_at = ? WHERE {_FENCE}",
                (at, time.time(), notification.id, notification.lease),
            ).rowcount
            return changed == 1

        return await self._db.read(release)

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
        """Record one attempt and the state it leaves the notification in, in one transaction,
        with the webhook event it owes, if any. False (and nothing recorded) if the claim's
        lease was taken over by another claim."""
        now = time.time()
        skipped = None if suppressed is None else json.dumps([s.as_json() for s in suppressed])
        owed = event_for_attempt(
            notification,
            status=status,
            subject=subject,
            pending=pending,
            delivered=delivered,
            refused=refused,
            last_error=last_error,
            suppressed=suppressed,
            now=now,
        )

        def update(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE notifications SET status = ?, subject = COALESCE(?, subject),"
                " pending = ?, delivered = ?, refused = ?, last_error = ?, next_attempt_at = ?,"
                f" updated_at = ?, sent_at = ?, attempts = attempts + 1,"
                " suppressed = COALESCE(?, suppressed),"
                f" raw_message = COALESCE(?, raw_message) WHERE {_FENCE}",
                (
                    status,
                    subject,
                    json.dumps(pending),
                    json.dumps(delivered),
                    json.dumps([r.as_json() for r in refused]),
                    last_error,
                    next_attempt_at,
                    now,
                    now if status is Status.SENT else None,
                    skipped,
                    raw_message.pack(message),
                    notification.id,
                    notification.lease,
                ),
            ).rowcount
            if changed != 1:
                return False
            db.execute(
                "INSERT INTO attempts (notification_id, at, outcome, smtp_code, detail,"
                " duration_ms, recipients) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    notification.id,
                    attempt.at,
                    attempt.outcome,
                    attempt.smtp_code,
                    attempt.detail,
                    attempt.duration_ms,
                    json.dumps([r.as_json() for r in attempt.recipients]),
                ),
            )
            if owed is not None:
                insert_event(db, owed)
            return True

        return await self._db.write(update)

    async def cancel(
        self, notification_id: str, *, owner: str | None
    ) -> tuple[bool, Status | None]:
        """(True, cancelled) or (False, the status that forbids it; None if unknown or not
        `owner`'s)."""
        mine, params = _owned(notification_id, owner)
        now = time.time()

        def cancel(db: sqlite3.Connection) -> tuple[bool, Status | None]:
            cancelled = db.execute(
                "UPDATE notifications SET status = 'cancelled', next_attempt_at = NULL,"
                f" updated_at = ? WHERE {mine} AND status IN ('scheduled', 'queued', 'deferred')"
                f" RETURNING {_COLUMNS}",
                (now, *params),
            ).fetchone()
            if cancelled is not None:
                if (owed := event_for(rows.shown(cancelled), now=now)) is not None:
                    insert_event(db, owed)
                return True, Status.CANCELLED
            row = db.execute(f"SELECT status FROM notifications WHERE {mine}", params).fetchone()
            return False, None if row is None else rows.known_status(row["status"])

        return await self._db.write(cancel)

    async def retry(self, notification_id: str, *, owner: str | None) -> tuple[bool, Status | None]:
        """(True, queued) or (False, the status that forbids it; None if unknown or not
        `owner`'s). Conditional on `failed`, so of two concurrent retries one applies; the
        hard bounces its refusals put on the suppression list are lifted with it."""
        mine, params = _owned(notification_id, owner)
        now = time.time()

        def retry(db: sqlite3.Connection) -> tuple[bool, Status | None]:
            failed = db.execute(
                f"SELECT caller, refused FROM notifications WHERE {mine} AND status = 'failed'",
                params,
            ).fetchone()
            if failed is None:
                row = db.execute(f"SELECT status FROM notifications WHERE {mine}", params)
                found = row.fetchone()
                return False, None if found is None else rows.known_status(found["status"])
            db.execute(f"{_RETRY} WHERE {mine}", (now, now, now, *params))
            lift_hard_bounces(db, failed["caller"], rows.refused_emails(failed["refused"]))
            return True, Status.QUEUED

        return await self._db.write(retry)

    async def sent_message(self, notification_id: str, *, owner: str | None) -> bytes | None:
        """The message bytes the last sending attempt gave the SMTP server; None if none did."""
        mine, params = _owned(notification_id, owner)

        def select(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(f"SELECT raw_message FROM notifications WHERE {mine}", params)
            found = row.fetchone()
            return None if found is None else raw_message.unpack(found[0])

        return await self._reads.read(select)

    # -- workers --------------------------------------------------------------------------

    async def record_heartbeat(self, worker: str) -> None:
        """`worker` is alive now (by this machine's clock); workers long silent are forgotten."""
        now = time.time()

        def beat(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO heartbeats (worker, beat_at) VALUES (?, ?)"
                " ON CONFLICT (worker) DO UPDATE SET beat_at = excluded.beat_at",
                (worker, now),
            )
            db.execute(
                "DELETE FROM heartbeats WHERE beat_at < ?", (now - HEARTBEAT_MEMORY_SECONDS,)
            )

        await self._db.write(beat)

    async def last_heartbeat(self, *, host: str | None = None) -> float | None:
        """When a worker last beat (epoch seconds), or None if none did; with `host`, only the
        workers on that machine (named `host:…`)."""
        sql = "SELECT max(beat_at) FROM heartbeats"
        params: tuple[object, ...] = ()
        if host is not None:
            prefix = f"{host}:"
            sql, params = f"{sql} WHERE substr(worker, 1, ?) = ?", (len(prefix), prefix)

        def select(db: sqlite3.Connection) -> float | None:
            beat_at: float | None = db.execute(sql, params).fetchone()[0]
            return beat_at

        return await self._reads.read(select)


def search_sql(
    query: NotificationFilter, *, owner: str | None, limit: int, after: tuple[float, str] | None
) -> tuple[str, list[object]]:
    """The statement (and its parameters) of `SqliteStore.search`. One caller's pages walk
    the index notifications_by_caller (caller, created_at, id) in its order: no sort, and no
    row of another caller read, however big the table (tests.test_store checks the plan)."""
    recipient = None if query.recipient is None else recipient_key(query.recipient)
    filters: list[tuple[str, list[object] | None]] = [
        ("caller = ?", _one(owner)),
        ("status = ?", _one(query.status)),
        ("template = ?", _one(query.template)),
        (_HAS_TAG, _one(query.tag)),
        (_HAS_RECIPIENT, None if recipient is None else [recipient] * 3),
        ("created_at >= ?", _one(query.created_after)),
        ("created_at < ?", _one(query.created_before)),
        ("instr(last_error, ?) > 0", _one(query.error_contains)),
    ]
    where = ["1 = 1", *(sql for sql, values in filters if values is not None)]
    params: list[object] = [v for _, values in filters for v in values or ()]
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params.extend(after)
    sql = (
        f"SELECT {_COLUMNS} FROM notifications"
        f" WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return sql, [*params, limit]


def _one(value: object) -> list[object] | None:
    return None if value is None else [value]


def _insert(db: sqlite3.Connection, new: NewNotification) -> None:
    db.execute(
        "INSERT INTO notifications (id, status, template, caller, request_id, request, message_id,"
        " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.status,
            new.request.template,
            new.caller,
            new.request_id,
            new.request.model_dump_json(by_alias=True, exclude_defaults=True),
            new.message_id,
            new.due_at,
            new.created_at,
            new.created_at,
        ),
    )


def _owned(notification_id: str, owner: str | None) -> tuple[str, tuple[str, ...]]:
    """The condition (and its parameters) that picks the notification if it is `owner`'s;
    any caller's with None."""
    if owner is None:
        return "id = ?", (notification_id,)
    return "id = ? AND caller = ?", (notification_id, owner)


def _select(
    db: sqlite3.Connection, notification_id: str, *, owner: str | None
) -> Notification | None:
    mine, params = _owned(notification_id, owner)
    row = db.execute(f"SELECT {_COLUMNS} FROM notifications WHERE {mine}", params).fetchone()
    return None if row is None else _shown(row)


def _shown(row: sqlite3.Row) -> Notification:
    notification = rows.shown(row)
    if notification.unreadable:
        event(
            log,
            "store.unreadable_row",
            level=logging.ERROR,
            id=notification.id,
            error=notification.unreadable,
        )
    return notification


def _attempts(db: sqlite3.Connection, ids: list[str]) -> dict[str, list[AttemptRecord]]:
    found: dict[str, list[AttemptRecord]] = {i: [] for i in ids}
    marks = ", ".join("?" * len(ids))
    for row in db.execute(
        "SELECT notification_id, at, outcome, smtp_code, detail, duration_ms, recipients"
        " FROM attempts"
        f" WHERE notification_id IN ({marks}) ORDER BY id",
        ids,
    ):
        if (attempts := found.get(row["notification_id"])) is not None:
            attempts.append(rows.attempt(row))
    return found
