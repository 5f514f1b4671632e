"""The heartbeat of a delivering process: it goes on through database trouble."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from app.delivery.heartbeat import Heartbeat, beat_interval, fresh_within
from app.store.migrations import migrate
from app.store.sqlite import SqliteStore as Store
from tests.conftest import make_settings, wait_for


async def test_a_heartbeat_stops_while_the_database_is_locked_and_resumes_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notifications.db"
    await migrate(f"sqlite:///{path}")  # the store expects its schema at head
    store = Store(path, busy_timeout=0.05)
    heartbeat = Heartbeat(store=store, name="here:1", every=0.05)
    heartbeat.start()
    try:
        await wait_for(lambda: _beat_at(path) is not None)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            held = _beat_at(path)
            # ten beats fail meanwhile (each waits out the busy timeout): none gets through
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: _beat_at(path) != held, within=0.5)
            assert _beat_at(path) == held
            blocker.execute("ROLLBACK")
        await wait_for(lambda: _beat_at(path) != held)  # the same task beats again
    finally:
        await heartbeat.stop()
        await store.close()


def _beat_at(path: Path) -> float | None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT beat_at FROM heartbeats WHERE worker = 'here:1'").fetchone()
    return None if row is None else float(row[0])


def test_beats_follow_the_poll_interval_within_one_to_five_seconds(tmp_path: Path) -> None:
    def interval(poll: float) -> float:
        return beat_interval(make_settings(tmp_path, 25, poll_interval=poll))

    assert [interval(p) for p in (0.05, 0.5, 1.0, 60)] == [1.0, 2.0, 4.0, 5.0]
    assert fresh_within(make_settings(tmp_path, 25)) == 6.0  # three beats at the default
