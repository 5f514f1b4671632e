"""The store on real SQLite files: fenced claims, due order, rows that no longer read, writer
failures, and reads that answer whatever a row holds (upgrades in place: test_migrations)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.addresses import parse_address
from app.api.schemas import NotificationRequest, Status
from app.main import create_app
from app.store.migrations import migrate
from app.store.records import AttemptRecord, NewNotification, Notification
from app.store.sqlite import SqliteStore
from bench.processes import free_port
from tests.conftest import WELCOME, make_settings, wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, reaches, service

SENDER = parse_address("noreply@example.com")


def new_notification(**changes: Any) -> NewNotification:
    request = NotificationRequest.model_validate({**WELCOME, **changes})
    return NewNotification.from_request(request, sender=SENDER, caller="test")


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    """The store on `path`, migrated first, as the service opens it."""
    await migrate(f"sqlite:///{path}")
    store = SqliteStore(path)
    try:
        yield store
    finally:
        await store.close()


def execute(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the file behind the service's back, as another program (or a hand) would."""
    with sqlite3.connect(path) as db:
        db.execute(sql, params)
    db.close()


def a_try(outcome: Status) -> AttemptRecord:
    return AttemptRecord(
        at=time.time(), outcome=outcome, smtp_code=250, detail="ok", duration_ms=1.0
    )


async def finish(store: SqliteStore, claim: Notification, status: Status) -> bool:
    return await store.finish_attempt(
        claim,
        status=status,
        attempt=a_try(status),
        subject="Hi",
        pending=[],
        delivered=["ada@example.com"] if status is Status.SENT else [],
        refused=[],
        last_error=None,
        next_attempt_at=time.time() + 60 if status is Status.DEFERRED else None,
    )


# -- fencing --------------------------------------------------------------------------------


async def test_a_claim_whose_lease_expired_cannot_overwrite_a_newer_claim(tmp_path: Path) -> None:
    async with opened(tmp_path / "n.db") as store:
        new = new_notification()
        await store.create(new)
        stale = await store.claim(new.id, lease_seconds=0)  # its lease expires at once
        assert stale is not None
        [newer] = await store.claim_due(limit=10, lease_seconds=60)
        assert newer.id == new.id and newer.lease != stale.lease

        # The first worker comes back late with its outcome: nothing of it is applied.
        assert not await finish(store, stale, Status.SENT)
        await store.release(stale, at=0)
        current = await store.get(new.id, owner=None)
        assert current is not None
        assert (current.status, current.attempts, current.attempt_count) == (Status.SENDING, [], 0)

        assert await finish(store, newer, Status.DEFERRED)
        assert not await finish(store, newer, Status.SENT)  # a finished claim is spent
        current = await store.get(new.id, owner=None)
        assert current is not None
        assert (current.status, current.attempt_count) == (Status.DEFERRED, 1)
        assert [a.outcome for a in current.attempts] == [Status.DEFERRED]


async def test_release_gives_back_as_deferred_once_attempted(tmp_path: Path) -> None:
    async with opened(tmp_path / "n.db") as store:
        new = new_notification()
        await store.create(new)
        first = await store.claim(new.id, lease_seconds=0)
        assert first is not None
        await store.release(first, at=0)
        assert (await store.get(new.id, owner=None)).status is Status.QUEUED  # type: ignore[union-attr]
        [second] = await store.claim_due(limit=1, lease_seconds=0)
        assert await finish(store, second, Status.DEFERRED)
        execute(tmp_path / "n.db", "UPDATE notifications SET next_attempt_at = 0")
        [third] = await store.claim_due(limit=1, lease_seconds=60)
        await store.release(third, at=0)
        assert (await store.get(new.id, owner=None)).status is Status.DEFERRED  # type: ignore[union-attr]


# -- due order ------------------------------------------------------------------------------


async def test_claims_take_the_longest_due_first_not_by_status_name(tmp_path: Path) -> None:
    async with opened(tmp_path / "n.db") as store:
        fresh, retry = new_notification(), new_notification()
        await store.create_many([fresh, retry])
        now = time.time()
        execute(tmp_path / "n.db", "UPDATE notifications SET next_attempt_at = ?", (now - 100,))
        execute(
            tmp_path / "n.db",
            "UPDATE notifications SET status = 'deferred', next_attempt_at = ? WHERE id = ?",
            (now - 10, retry.id),
        )
        assert [n.id for n in await store.claim_due(limit=1, lease_seconds=60)] == [fresh.id]
        assert [n.id for n in await store.claim_due(limit=1, lease_seconds=60)] == [retry.id]


WAITING_STATES = ["queued", "scheduled", "deferred", "sending"]


@given(
    rows=st.lists(
        st.tuples(st.sampled_from(WAITING_STATES), st.integers(-100_000, 100_000)),
        min_size=1,
        max_size=12,
        unique_by=lambda row: row[1],
    ),
    batch=st.integers(1, 5),
)
@settings(max_examples=40, deadline=None, derandomize=True)
def test_claims_come_out_in_due_order_whatever_the_status(
    rows: list[tuple[str, int]], batch: int
) -> None:
    async def scenario(path: Path) -> None:
        async with opened(path) as store:
            news = [new_notification() for _ in rows]
            ids = [new.id for new in news]
            await store.create_many(news)
            now = time.time()
            for notification_id, (status, offset) in zip(ids, rows, strict=True):
                execute(
                    path,
                    "UPDATE notifications SET status = ?, next_attempt_at = ? WHERE id = ?",
                    (status, now + offset, notification_id),
                )
            batches: list[set[str]] = []
            while found := await store.claim_due(limit=batch, lease_seconds=3600):
                batches.append({n.id for n in found})
            due = [
                i
                for offset, i in sorted(zip((o for _, o in rows), ids, strict=True))
                if offset <= 0
            ]
            # each claim takes the `batch` longest due of those left, whatever their status
            assert batches == [set(due[i : i + batch]) for i in range(0, len(due), batch)]

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder) / "n.db"))


# -- rows that no longer read ---------------------------------------------------------------

DAMAGE = {
    "request is not JSON": ("request", '{"template": "welc'),
    "request from another version": (
        "request",
        json.dumps({**WELCOME, "priority": "high"}),
    ),
    "request without recipients": ("request", json.dumps({"template": "welcome"})),
    "refused is not a list": ("refused", '{"oops": 1}'),
    "attempt counter is text": ("attempts", "three"),
    "created_at is text": ("created_at", "yesterday"),
}


@pytest.mark.parametrize(("column", "value"), DAMAGE.values(), ids=DAMAGE.keys())
async def test_a_row_that_cannot_be_read_fails_alone_and_the_others_are_claimed(
    tmp_path: Path, column: str, value: str
) -> None:
    async with opened(tmp_path / "n.db") as store:
        good = [new_notification() for _ in range(3)]
        bad = new_notification()
        await store.create_many([good[0], bad, *good[1:]])
        execute(
            tmp_path / "n.db",
            f"UPDATE notifications SET {column} = ? WHERE id = ?",
            (value, bad.id),
        )

        claimed = await store.claim_due(limit=10, lease_seconds=60)
        assert sorted(n.id for n in claimed) == sorted(n.id for n in good)
        failed = await store.get(bad.id, owner=None)
        assert failed is not None and failed.status is Status.FAILED
        assert failed.last_error is not None
        assert failed.last_error.startswith("the stored notification cannot be read: ")
        assert column in failed.last_error
        assert await store.claim_due(limit=10, lease_seconds=60) == []  # never tried again


async def test_an_unreadable_row_does_not_stop_delivery_of_the_others(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with opened(tmp_path / "notifications.db") as store:
        news = [new_notification(to=[f"user{i}@example.com"]) for i in range(3)]
        await store.create_many(news)  # due now: the loop's first claim takes all three
    execute(
        tmp_path / "notifications.db",
        "UPDATE notifications SET request = ? WHERE id = ?",
        ('{"template": "welcome", "to": "nobody"}', news[0].id),
    )
    async with service(tmp_path, smtp) as client:
        for new in news[1:]:
            await reaches(client, f"/v1/notifications/{new.id}", "sent")
        broken = await reaches(client, f"/v1/notifications/{news[0].id}", "failed")
    assert broken["last_error"] == (
        "the stored notification cannot be read: request: to: Input should be a valid array"
    )
    received = sorted(m.rcpt_tos[0] for m in smtp.messages)
    assert received == ["user1@example.com", "user2@example.com"]


async def test_a_row_from_another_version_is_shown_with_what_can_be_read(
    client: httpx.AsyncClient, settings: Any
) -> None:
    later = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    smtp_down = {**WELCOME, "send_at": later}  # waits; never claimed here
    location = await accept(client, {**smtp_down, "tags": ["t1"], "cc": ["cy@example.com"]})
    notification_id = location.rsplit("/", 1)[1]
    stored = {**smtp_down, "tags": ["t1"], "cc": ["cy@example.com"], "priority": "high"}
    execute(
        settings.database_path,
        "UPDATE notifications SET request = ? WHERE id = ?",
        (json.dumps(stored), notification_id),
    )
    for response in (
        await client.get(location),
        await client.get("/v1/notifications", params={"tag": "t1"}),
    ):
        assert response.status_code == 200, response.text
    shown = (await client.get(location)).json()
    assert shown["status"] == "scheduled"
    assert shown["recipients"]["cc"] == [{"email": "cy@example.com", "name": None}]
    assert shown["tags"] == ["t1"]
    assert "priority" in shown["last_error"]
    listed = (await client.get("/v1/notifications", params={"tag": "t1"})).json()["items"]
    assert [n["id"] for n in listed] == [notification_id]


# -- the group-commit writer ----------------------------------------------------------------


def damage_the_file(path: Path) -> bytes:
    """Overwrite the file's header the way a disk or another program might; return it."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("UPDATE notifications SET updated_at = updated_at")  # a new WAL snapshot
        # everything into the main file, so the next read finds the damaged header
        while db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
            time.sleep(0.01)
    db.close()
    with path.open("r+b") as file:
        header = file.read(16)
        file.seek(0)
        file.write(b"not a database!!")
    return header


async def test_a_damaged_database_answers_every_waiter_with_503_and_writes_resume(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    path = tmp_path / "notifications.db"
    async with service(tmp_path, smtp) as client:
        location = await accept(client)
        await reaches(client, location, "sent")
        header = await asyncio.to_thread(damage_the_file, path)

        # five requests share one group commit, which fails at BEGIN: none may hang
        writes = asyncio.gather(*(client.post("/v1/notifications", json=WELCOME) for _ in range(5)))
        answers = [*await asyncio.wait_for(writes, timeout=15), await client.get(location)]
        assert [r.status_code for r in answers] == [503] * 6
        assert all(r.headers["retry-after"] for r in answers)

        with path.open("r+b") as file:
            file.write(header)  # repaired: the next write gets a fresh writer and connection

        async def accepting() -> bool:
            response = await client.post("/v1/notifications", json=WELCOME)
            return response.status_code == 202

        await wait_for(accepting)


# -- reads answer whatever a row holds ------------------------------------------------------


@dataclass(frozen=True)
class RawText:
    """Text stored as bytes that are not UTF-8 (written by some other program)."""

    data: bytes


SOME_VALUE = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.builds(RawText, st.binary(min_size=1, max_size=10)),
)
ANY_VALUE = st.none() | SOME_VALUE
# JSON text may hold escapes of lone surrogates, which no answer could carry
JSON_TEXT = st.lists(st.characters() | st.sampled_from(["\ud800", "\udfff"]), max_size=10).map(
    "".join
)
JSON_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
JSON_VALUE = JSON_DATA.map(json.dumps)
EPOCH = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([253402300799.0 + 50400, -62135596800.0 - 1, 1e300, -1e300]),
    st.floats(0, 2e9),
)
# a request as stored, as another version might have stored it, or anything at all
ADDRESS_DATA = st.one_of(
    st.fixed_dictionaries({"email": JSON_TEXT, "name": st.none() | JSON_TEXT}),
    st.sampled_from(["", "ada@", "a@b@c", "x@" + "d" * 70 + ".example", "ada@example.com"]),
    JSON_TEXT,
)
REQUEST = st.one_of(
    st.just(json.dumps(WELCOME)),
    st.dictionaries(
        st.sampled_from(["tags", "cc", "from", "metadata", "send_at", "priority"]),
        JSON_DATA,
        max_size=3,
    ).map(lambda extra: json.dumps({**WELCOME, **extra})),
    # addresses a hand might have stored: read back as trusted, so never validated on the way
    st.dictionaries(
        st.sampled_from(["to", "cc", "bcc"]), st.lists(ADDRESS_DATA, min_size=1, max_size=2)
    )
    .map(lambda lists: {**WELCOME, **lists})
    .flatmap(
        lambda request: st.fixed_dictionaries(
            {"from": st.none() | ADDRESS_DATA, "reply_to": st.none() | ADDRESS_DATA}
        ).map(lambda singles: json.dumps({**request, **singles}))
    ),
    JSON_VALUE,
    SOME_VALUE,
)
ADDRESSES = st.one_of(
    st.just('["ada@example.com"]'),
    st.lists(JSON_TEXT, max_size=3).map(json.dumps),
    JSON_VALUE,
    ANY_VALUE,
)
REFUSALS = st.one_of(
    st.lists(
        st.fixed_dictionaries({"email": JSON_TEXT, "code": st.integers(), "message": JSON_TEXT}),
        max_size=2,
    ).map(json.dumps),
    JSON_VALUE,
    SOME_VALUE,
)


ROW = st.fixed_dictionaries(
    {
        "status": st.one_of(st.sampled_from([s.value for s in Status]), SOME_VALUE),
        "template": SOME_VALUE,
        "caller": SOME_VALUE,
        "request_id": ANY_VALUE,
        "request": REQUEST,
        "message_id": SOME_VALUE,
        "subject": ANY_VALUE,
        "pending": ADDRESSES,
        "delivered": ADDRESSES,
        "refused": REFUSALS,
        "last_error": ANY_VALUE,
        "next_attempt_at": st.one_of(EPOCH, ANY_VALUE),
        "created_at": st.one_of(EPOCH, SOME_VALUE),
        "updated_at": st.one_of(EPOCH, SOME_VALUE),
        "sent_at": st.one_of(EPOCH, ANY_VALUE),
        "attempts": SOME_VALUE,
        "lease": SOME_VALUE,
    }
)
ATTEMPT_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "at": st.one_of(EPOCH, SOME_VALUE),
            "outcome": SOME_VALUE,
            "smtp_code": ANY_VALUE,
            "detail": ANY_VALUE,
            "duration_ms": st.one_of(EPOCH, SOME_VALUE),
        }
    ),
    max_size=2,
)
ROW_ID = "row-under-test"


def store_row(path: Path, row: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
    """Write the row with sqlite3 as it is; RawText values become text that is not UTF-8."""

    def plain(value: Any) -> Any:
        return value.data if isinstance(value, RawText) else value

    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("DELETE FROM attempts")
        db.execute("DELETE FROM notifications")
        columns = ["id", *row]
        db.execute(
            f"INSERT INTO notifications ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            (ROW_ID, *(plain(v) for v in row.values())),
        )
        for column, value in row.items():
            if isinstance(value, RawText):
                db.execute(f"UPDATE notifications SET {column} = CAST({column} AS TEXT)")
        for attempt in attempts:
            db.execute(
                f"INSERT INTO attempts (notification_id, {', '.join(attempt)})"
                f" VALUES (?, {', '.join('?' * len(attempt))})",
                (ROW_ID, *(plain(v) for v in attempt.values())),
            )
            for column, value in attempt.items():
                if isinstance(value, RawText):
                    db.execute(f"UPDATE attempts SET {column} = CAST({column} AS TEXT)")
    db.close()


@dataclass
class Reader:
    """The service in its own event loop, kept across hypothesis examples."""

    runner: asyncio.Runner
    client: httpx.AsyncClient
    path: Path

    def get(self, url: str, **params: Any) -> httpx.Response:
        return self.runner.run(self.client.get(url, params=params))


@pytest.fixture(scope="module")
def reader() -> Iterator[Reader]:
    with tempfile.TemporaryDirectory() as folder, asyncio.Runner() as runner:
        # nothing listens on the SMTP port, and the loop looks for due work only at start
        settings = make_settings(Path(folder), free_port(), poll_interval=60, log_level="ERROR")
        application: FastAPI = create_app(settings)
        lifespan = application.router.lifespan_context(application)
        runner.run(lifespan.__aenter__())
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://t"
        )
        try:
            yield Reader(runner, client, settings.database_path)
        finally:
            runner.run(client.aclose())
            runner.run(lifespan.__aexit__(None, None, None))


def test_a_send_time_beyond_year_9999_does_not_break_reads(reader: Reader) -> None:
    # "9999-12-31T23:59:59-14:00" is year 10000 in UTC
    row = {
        "status": "scheduled",
        "template": "welcome",
        "caller": "web",
        "request": json.dumps(WELCOME),
        "message_id": "<m@example.com>",
        "next_attempt_at": 253402300799.0 + 14 * 3600,
        "created_at": time.time(),
        "updated_at": time.time(),
    }
    store_row(reader.path, row, [])
    shown = reader.get(f"/v1/notifications/{ROW_ID}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["next_attempt_at"] == "9999-12-31T23:59:59.999999Z"
    listed = reader.get("/v1/notifications")
    assert listed.status_code == 200, listed.text
    assert [n["id"] for n in listed.json()["items"]] == [ROW_ID]


def plain_row(**changes: Any) -> dict[str, Any]:
    """A row as the service writes it, with `changes`."""
    now = time.time()
    return {
        "status": "queued",
        "template": "welcome",
        "caller": "web",
        "request": json.dumps(WELCOME),
        "message_id": "<m@example.com>",
        "created_at": now,
        "updated_at": now,
        **changes,
    }


# Cases found by the test below before they were fixed, kept so that every run tries them.
FOUND = [
    plain_row(request=json.dumps({**WELCOME, "to": [{"email": "", "name": None}]})),
    plain_row(request=json.dumps({**WELCOME, "tags": ["\ud800"]})),
    plain_row(pending='["\\ud800"]', refused="{}"),
    plain_row(status="paused", subject=RawText(b"\xff"), created_at="yesterday"),
    plain_row(next_attempt_at=253402300799.0 + 50400, sent_at=-1e300),
]


@given(row=ROW, attempts=ATTEMPT_ROWS)
@example(row=FOUND[0], attempts=[])
@example(row=FOUND[1], attempts=[])
@example(row=FOUND[2], attempts=[])
@example(row=FOUND[3], attempts=[])
@example(row=FOUND[4], attempts=[{"at": 1e300, "outcome": 1, "duration_ms": float("inf")}])
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_whatever_a_stored_row_holds_reads_answer_200(
    reader: Reader, row: dict[str, Any], attempts: list[dict[str, Any]]
) -> None:
    store_row(reader.path, row, attempts)
    shown = reader.get(f"/v1/notifications/{ROW_ID}")
    assert shown.status_code == 200, shown.text
    listed = reader.get("/v1/notifications")
    assert listed.status_code == 200, listed.text
    assert [n["id"] for n in listed.json()["items"]] == [ROW_ID]
    for params in ({"limit": 1}, {"tag": "t1"}, {"status": shown.json()["status"]}):
        assert reader.get("/v1/notifications", **params).status_code == 200, params
    cursor = reader.get("/v1/notifications", limit=1).json()["next_cursor"]
    assert reader.get("/v1/notifications", cursor=cursor).status_code == 200
    assert reader.get("/metrics").status_code == 200
    cancelled = reader.runner.run(reader.client.post(f"/v1/notifications/{ROW_ID}/cancel"))
    assert cancelled.status_code in (200, 409), cancelled.text
