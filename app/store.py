"""The notification store: the only module that touches the database (one SQLite file).

Every write commits durably (see `database`) before it returns, so a caller that got a 202 knows
its notification is on disk. Claims are single UPDATE statements, atomic across threads and
processes sharing the file.

`next_attempt_at` means "due at": the send time of a scheduled or queued row, the retry time of a
deferred one, and the lease expiry of a `sending` one, so one index finds all due work.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from app.database import Database
from app.errors import IdempotencyConflict
from app.records import (
    WAITING,
    AttemptRecord,
    NewNotification,
    Notification,
    NotificationFilter,
    Refusal,
)
from app.schemas import NotificationRequest, Status

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    caller TEXT NOT NULL,
    request_id TEXT,
    request TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT,
    pending TEXT,
    refused TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications(id),
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code INTEGER,
    detail TEXT,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_notification ON attempts(notification_id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys(created_at);
"""

# Rows were validated when accepted; reading them back skips the costly address checks.
TRUSTED = {"trusted": True}
_WAITING_SQL = ", ".join(f"'{s}'" for s in (*WAITING, Status.SENDING))
_ATTEMPT_COUNT = "(SELECT COUNT(*) FROM attempts a WHERE a.notification_id = notifications.id)"


class Store:
    def __init__(self, path: Path, *, synchronous: str = "FULL", busy_timeout: float = 5.0) -> None:
        self._db = Database(path, synchronous=synchronous, busy_timeout=busy_timeout)
        self._db.setup(_SCHEMA, _migrate)

    def close(self) -> None:
        self._db.close()

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
                    earlier = _select(db, row["notification_id"])
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

    async def get(self, notification_id: str) -> Notification | None:
        def select(db: sqlite3.Connection) -> Notification | None:
            notification = _select(db, notification_id)
            if notification is not None:
                notification.attempts.extend(_attempts(db, [notification_id])[notification_id])
            return notification

        return await self._db.read(select)

    async def search(
        self, query: NotificationFilter, *, limit: int, after: tuple[float, str] | None
    ) -> list[Notification]:
        """Newest first; `after` is the (created_at, id) of the last row of the previous page."""
        filters = [
            ("status = ?", query.status),
            ("EXISTS (SELECT 1 FROM json_each(request, '$.tags') WHERE value = ?)", query.tag),
            ("created_at >= ?", query.created_after),
            ("created_at < ?", query.created_before),
        ]
        where = ["1 = 1", *(sql for sql, value in filters if value is not None)]
        params: list[object] = [value for _, value in filters if value is not None]
        if after is not None:
            where.append("(created_at, id) < (?, ?)")
            params.extend(after)
        sql = (
            f"SELECT *, {_ATTEMPT_COUNT} AS attempt_count FROM notifications"
            f" WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?"
        )

        def select(db: sqlite3.Connection) -> list[Notification]:
            rows = [_notification(row) for row in db.execute(sql, (*params, limit))]
            attempts = _attempts(db, [n.id for n in rows])
            for notification in rows:
                notification.attempts.extend(attempts[notification.id])
            return rows

        return await self._db.read(select)

    async def count_waiting(self) -> int:
        def count(db: sqlite3.Connection) -> int:
            sql = f"SELECT COUNT(*) FROM notifications WHERE status IN ({_WAITING_SQL})"
            waiting: int = db.execute(sql).fetchone()[0]
            return waiting

        return await self._db.read(count)

    async def count_by_status(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute("SELECT status, COUNT(*) FROM notifications GROUP BY status")
            return {status: n for status, n in rows}

        return await self._db.read(count)

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
        """Take up to `limit` notifications that are due: queued or scheduled ones whose time
        has come, deferred ones ready for a retry, and `sending` ones whose lease expired
        (their worker died)."""
        return await self._claim(
            "id IN (SELECT id FROM notifications"
            f" WHERE status IN ({_WAITING_SQL}) AND next_attempt_at <= ?"
            " ORDER BY status, next_attempt_at LIMIT ?)",
            (time.time(), limit),
            lease_seconds,
        )

    async def _claim(
        self, condition: str, params: tuple[object, ...], lease_seconds: float
    ) -> list[Notification]:
        now = time.time()
        sql = (
            "UPDATE notifications SET status = 'sending', next_attempt_at = ?, updated_at = ?"
            f" WHERE {condition} RETURNING *, {_ATTEMPT_COUNT} AS attempt_count"
        )

        def claim(db: sqlite3.Connection) -> list[Notification]:
            return [
                _notification(row) for row in db.execute(sql, (now + lease_seconds, now, *params))
            ]

        return await self._db.write(claim)

    async def release(self, notification: Notification, *, at: float) -> None:
        """Give a claimed notification back untouched, due at `at` (no attempt is recorded)."""
        status = Status.DEFERRED if notification.attempt_count else Status.QUEUED

        def release(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE notifications SET status = ?, next_attempt_at = ?, updated_at = ?"
                " WHERE id = ? AND status = 'sending'",
                (status, at, time.time(), notification.id),
            )

        await self._db.read(release)

    async def finish_attempt(
        self,
        notification_id: str,
        *,
        status: Status,
        attempt: AttemptRecord,
        subject: str | None,
        pending: list[str],
        refused: list[Refusal],
        next_attempt_at: float | None,
    ) -> None:
        """Record one attempt and the state it leaves the notification in, in one transaction."""
        now = time.time()
        error = None if status is Status.SENT and not refused else attempt.detail

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO attempts (notification_id, at, outcome, smtp_code, detail,"
                " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    notification_id,
                    attempt.at,
                    attempt.outcome,
                    attempt.smtp_code,
                    attempt.detail,
                    attempt.duration_ms,
                ),
            )
            db.execute(
                "UPDATE notifications SET status = ?, subject = COALESCE(?, subject),"
                " pending = ?, refused = ?, last_error = ?, next_attempt_at = ?, updated_at = ?,"
                " sent_at = ? WHERE id = ?",
                (
                    status,
                    subject,
                    json.dumps(pending),
                    json.dumps([r.as_json() for r in refused]),
                    error,
                    next_attempt_at,
                    now,
                    now if status is Status.SENT else None,
                    notification_id,
                ),
            )

        await self._db.write(update)

    async def cancel(self, notification_id: str) -> tuple[bool, Status | None]:
        """(True, cancelled) or (False, the status that forbids it; None if unknown)."""

        def cancel(db: sqlite3.Connection) -> tuple[bool, Status | None]:
            cancelled = db.execute(
                "UPDATE notifications SET status = 'cancelled', next_attempt_at = NULL,"
                " updated_at = ? WHERE id = ? AND status IN ('scheduled', 'queued', 'deferred')"
                " RETURNING id",
                (time.time(), notification_id),
            ).fetchone()
            if cancelled is not None:
                return True, Status.CANCELLED
            row = db.execute(
                "SELECT status FROM notifications WHERE id = ?", (notification_id,)
            ).fetchone()
            return False, None if row is None else Status(row["status"])

        return await self._db.write(cancel)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to this schema."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(notifications)")}
    if "request_id" not in columns:
        db.execute("ALTER TABLE notifications ADD COLUMN request_id TEXT")


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


def _select(db: sqlite3.Connection, notification_id: str) -> Notification | None:
    row = db.execute(
        f"SELECT *, {_ATTEMPT_COUNT} AS attempt_count FROM notifications WHERE id = ?",
        (notification_id,),
    ).fetchone()
    return None if row is None else _notification(row)


def _attempts(db: sqlite3.Connection, ids: list[str]) -> dict[str, list[AttemptRecord]]:
    found: dict[str, list[AttemptRecord]] = {i: [] for i in ids}
    marks = ", ".join("?" * len(ids))
    for row in db.execute(
        "SELECT notification_id, at, outcome, smtp_code, detail, duration_ms FROM attempts"
        f" WHERE notification_id IN ({marks}) ORDER BY id",
        ids,
    ):
        values = dict(row)
        found[values.pop("notification_id")].append(AttemptRecord(**values))
    return found


def _notification(row: sqlite3.Row) -> Notification:
    status = Status(row["status"])
    return Notification(
        id=row["id"],
        status=status,
        caller=row["caller"],
        request_id=row["request_id"],
        request=NotificationRequest.model_validate_json(row["request"], context=TRUSTED),
        message_id=row["message_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        subject=row["subject"],
        pending=None if row["pending"] is None else json.loads(row["pending"]),
        refused=[Refusal(**r) for r in json.loads(row["refused"])],
        last_error=row["last_error"],
        due_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
        attempt_count=row["attempt_count"],
    )
