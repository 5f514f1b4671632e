"""The notification store: the only module that touches the database (one SQLite file).

Every write commits durably (WAL with synchronous=FULL) before it returns, so a caller that got
a 202 knows its notification is on disk. Calls run in a worker thread to keep the event loop free.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from app.errors import StoreUnavailable
from app.schemas import NotificationRequest, Status

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    request TEXT NOT NULL,
    subject TEXT,
    last_error TEXT,
    next_attempt_at REAL,
    lease_until REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    message_id TEXT
);
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
"""


@dataclass(frozen=True)
class AttemptRecord:
    at: float
    outcome: str
    smtp_code: int | None
    detail: str | None
    duration_ms: float


@dataclass(frozen=True)
class Notification:
    id: str
    status: Status
    request: NotificationRequest
    created_at: float
    updated_at: float
    subject: str | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None
    sent_at: float | None = None
    message_id: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return work(self._db)
                except sqlite3.OperationalError as exc:
                    # busy, locked, full, read-only: the caller should try again later
                    raise StoreUnavailable(f"database unavailable: {exc}") from exc

        return await asyncio.to_thread(locked)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1 FROM notifications LIMIT 1").fetchall())

    async def create(self, request: NotificationRequest) -> Notification:
        now = time.time()
        notification = Notification(
            id=str(uuid.uuid4()),
            status=Status.QUEUED,
            request=request,
            created_at=now,
            updated_at=now,
        )

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO notifications (id, status, template, request, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    notification.id,
                    notification.status,
                    request.template,
                    request.model_dump_json(by_alias=True, exclude_defaults=True),
                    now,
                    now,
                ),
            )

        await self._run(insert)
        return notification

    async def get(self, notification_id: str) -> Notification | None:
        def select(db: sqlite3.Connection) -> Notification | None:
            row = db.execute(
                "SELECT * FROM notifications WHERE id = ?", (notification_id,)
            ).fetchone()
            if row is None:
                return None
            attempts = db.execute(
                "SELECT at, outcome, smtp_code, detail, duration_ms FROM attempts"
                " WHERE notification_id = ? ORDER BY id",
                (notification_id,),
            ).fetchall()
            return _notification(row, [AttemptRecord(**dict(a)) for a in attempts])

        return await self._run(select)

    async def claim(self, notification_id: str, *, lease_seconds: float) -> Notification | None:
        """Mark a queued notification `sending`; None when someone else has it already."""
        now = time.time()

        def update(db: sqlite3.Connection) -> Notification | None:
            row = db.execute(
                "UPDATE notifications SET status = ?, lease_until = ?, updated_at = ?"
                " WHERE id = ? AND status = ? RETURNING *",
                (Status.SENDING, now + lease_seconds, now, notification_id, Status.QUEUED),
            ).fetchone()
            return None if row is None else _notification(row, [])

        return await self._run(update)

    async def finish_attempt(
        self,
        notification_id: str,
        *,
        status: Status,
        attempt: AttemptRecord,
        subject: str | None = None,
        message_id: str | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Record one attempt and the state it leaves the notification in, in one transaction."""
        now = time.time()
        error = None if status is Status.SENT else attempt.detail

        def update(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
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
                    " message_id = COALESCE(?, message_id), last_error = ?, next_attempt_at = ?,"
                    " lease_until = NULL, updated_at = ?, sent_at = ? WHERE id = ?",
                    (
                        status,
                        subject,
                        message_id,
                        error,
                        next_attempt_at,
                        now,
                        now if status is Status.SENT else None,
                        notification_id,
                    ),
                )

        await self._run(update)


def _notification(row: sqlite3.Row, attempts: list[AttemptRecord]) -> Notification:
    return Notification(
        id=row["id"],
        status=Status(row["status"]),
        request=NotificationRequest.model_validate(json.loads(row["request"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        subject=row["subject"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        sent_at=row["sent_at"],
        message_id=row["message_id"],
        attempts=attempts,
    )
