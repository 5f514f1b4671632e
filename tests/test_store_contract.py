"""One contract, every store: each test runs against the SQLite file and against PostgreSQL.

A store keeps notifications, hands due ones out under a lease (one claimant at a time), records
attempts, and answers searches and counts; the API and the worker rely on nothing else.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.api.schemas import Status
from app.errors import IdempotencyConflict
from app.ids import new_uuid
from app.store.migrations import migrate
from app.store.postgres import PostgresStore
from app.store.protocol import NotificationStore
from app.store.records import AttemptRecord, Notification, NotificationFilter, Refusal
from app.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.factories import new

# Until tests/conftest.py loads it for every module; import from it only inside functions,
# after pytest has loaded it as a plugin (and rewritten its asserts).

AnyStore = NotificationStore
LEASE = 60.0


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AnyStore]:
    if backend == "sqlite":
        path = tmp_path / "notifications.db"
        await migrate(f"sqlite:///{path}")
        sqlite = SqliteStore(path)
        yield sqlite
        await sqlite.close()
        return
    from tests.postgres import empty_database

    url: str = request.getfixturevalue("postgres_session_url")  # asked for only here
    await empty_database(url)
    postgres = await PostgresStore.open(url)
    yield postgres
    await postgres.close()


@pytest.fixture
def fencing(backend: str, request: pytest.FixtureRequest) -> None:
    """The test needs lease tokens, which the SQLite store does not have yet."""
    del backend, request  # both stores fence their claims now


def lease(claimed: Notification) -> int | None:
    """The claim's fencing token, where the store has one (None: the SQLite store on main)."""
    token: int | None = getattr(claimed, "lease", None)
    return token


async def finish(
    store: AnyStore,
    claimed: Notification,
    status: Status = Status.SENT,
    *,
    next_attempt_at: float | None = None,
    pending: tuple[str, ...] = (),
    refused: tuple[Refusal, ...] = (),
    detail: str = "250 2.0.0 Ok",
) -> object:
    # bridge until both stores take the claimed notification (the SQLite store on main takes
    # its id and has no lease)
    return await store.finish_attempt(
        claimed,
        delivered=[],
        last_error=None if status is Status.SENT else detail,
        status=status,
        attempt=AttemptRecord(
            at=time.time(), outcome=status, smtp_code=250, detail=detail, duration_ms=12.5
        ),
        subject="Welcome, Ada",
        pending=list(pending),
        refused=list(refused),
        next_attempt_at=next_attempt_at,
    )


async def release(store: AnyStore, claimed: Any, *, at: float) -> object:
    return await store.release(claimed, at=at)


async def claim(store: AnyStore, notification_id: str, lease_seconds: float = LEASE) -> Any:
    claimed = await store.claim(notification_id, lease_seconds=lease_seconds)
    assert claimed is not None
    return claimed


# -- accepting and reading ----------------------------------------------------------------


async def test_a_created_notification_reads_back_identical(store: AnyStore) -> None:
    notification = new(tags=["onboarding"], metadata={"user": "42"})
    created, replayed = await store.create(notification)
    stored = await store.get(notification.id, owner=None)
    assert not replayed
    assert stored == created == notification.as_notification()
    assert stored.request_id == "req-1" and stored.attempts == [] and stored.attempt_count == 0


async def test_an_unknown_id_reads_as_none(store: AnyStore) -> None:
    assert await store.get(new_uuid(), owner=None) is None


async def test_an_idempotency_key_returns_the_earlier_notification(store: AnyStore) -> None:
    first, _ = await store.create(new(), idempotency_key="k", fingerprint="f", idempotency_ttl=60)
    again, replayed = await store.create(
        new(), idempotency_key="k", fingerprint="f", idempotency_ttl=60
    )
    assert replayed and again.id == first.id
    assert await store.count_by_status() == {"queued": 1}


async def test_an_idempotency_key_reused_for_another_request_conflicts(store: AnyStore) -> None:
    first, _ = await store.create(new(), idempotency_key="k", fingerprint="f", idempotency_ttl=60)
    with pytest.raises(IdempotencyConflict) as refused:
        await store.create(new(), idempotency_key="k", fingerprint="g", idempotency_ttl=60)
    assert refused.value.notification_id == first.id
    assert await store.count_by_status() == {"queued": 1}


async def test_idempotency_keys_belong_to_one_caller(store: AnyStore) -> None:
    keyed: dict[str, Any] = {"idempotency_key": "k", "fingerprint": "f", "idempotency_ttl": 60.0}
    mine, _ = await store.create(new(caller="alice"), **keyed)
    theirs, replayed = await store.create(new(caller="bob"), **keyed)
    assert not replayed and theirs.id != mine.id


async def test_an_idempotency_key_past_its_ttl_makes_a_new_notification(store: AnyStore) -> None:
    keyed: dict[str, Any] = {"idempotency_key": "k", "idempotency_ttl": 60.0}
    old, _ = await store.create(new(created_at=time.time() - 120), fingerprint="f", **keyed)
    fresh, replayed = await store.create(new(), fingerprint="g", **keyed)
    assert not replayed and fresh.id != old.id
    again, replayed = await store.create(new(), fingerprint="g", **keyed)
    assert replayed and again.id == fresh.id


async def test_forgotten_idempotency_keys_no_longer_match(store: AnyStore) -> None:
    keyed: dict[str, Any] = {"idempotency_key": "k", "idempotency_ttl": 3600.0}
    await store.create(new(created_at=time.time() - 120), fingerprint="f", **keyed)
    await store.forget_idempotency_keys(older_than=time.time() - 60)
    _, replayed = await store.create(new(), fingerprint="g", **keyed)  # no conflict: forgotten
    assert not replayed


async def test_create_many_stores_every_notification(store: AnyStore) -> None:
    batch = [new(), new(), new(status=Status.SCHEDULED, due_in=3600)]
    await store.create_many(batch)
    for notification in batch:
        assert await store.get(notification.id, owner=None) == notification.as_notification()
    assert await store.count_by_status() == {"queued": 2, "scheduled": 1}


async def test_create_many_stores_all_or_nothing(store: AnyStore) -> None:
    first = new()
    with pytest.raises(Exception):  # noqa: B017 (each database names a duplicate key its own way)
        await store.create_many([new(), first, first])
    assert await store.count_by_status() == {}


async def test_counts_cover_every_unfinished_notification(store: AnyStore) -> None:
    await store.create_many([new(), new(), new(status=Status.SCHEDULED, due_in=3600)])
    done, _ = await store.create(new())
    await finish(store, await claim(store, done.id))
    sending, _ = await store.create(new())
    await claim(store, sending.id)
    cancelled, _ = await store.create(new())
    await store.cancel(cancelled.id, owner=None)
    assert await store.count_waiting() == 4  # 2 queued, 1 scheduled, 1 sending
    assert await store.count_by_status() == {
        "queued": 2,
        "scheduled": 1,
        "sending": 1,
        "sent": 1,
        "cancelled": 1,
    }
    await store.ping()


# -- claiming -----------------------------------------------------------------------------


async def test_a_queued_notification_is_claimed_once(store: AnyStore) -> None:
    created, _ = await store.create(new())
    before = time.time()
    claimed = await claim(store, created.id, lease_seconds=30)
    assert claimed.status is Status.SENDING and claimed.request == created.request
    assert before + 29 < claimed.due_at < time.time() + 31  # due again when the lease ends
    assert await store.claim(created.id, lease_seconds=30) is None
    assert await store.claim_due(limit=10, lease_seconds=30) == []


async def test_only_queued_notifications_are_claimed_by_id(store: AnyStore) -> None:
    scheduled, _ = await store.create(new(status=Status.SCHEDULED, due_in=3600))
    cancelled, _ = await store.create(new())
    await store.cancel(cancelled.id, owner=None)
    assert await store.claim(scheduled.id, lease_seconds=LEASE) is None
    assert await store.claim(cancelled.id, lease_seconds=LEASE) is None
    assert await store.claim(new_uuid(), lease_seconds=LEASE) is None


async def test_claim_due_takes_due_work_only_up_to_the_limit(store: AnyStore) -> None:
    due = [new(due_in=-i) for i in range(3)]
    later = new(status=Status.SCHEDULED, due_in=3600)
    past_schedule = new(status=Status.SCHEDULED, due_in=-1)
    await store.create_many([*due, later, past_schedule])
    first = await store.claim_due(limit=2, lease_seconds=LEASE)
    rest = await store.claim_due(limit=10, lease_seconds=LEASE)
    assert len(first) == 2
    claimed = {n.id for n in first + rest}
    assert claimed == {n.id for n in due} | {past_schedule.id}
    assert all(n.status is Status.SENDING for n in first + rest)


async def test_claim_due_takes_the_earliest_due_first(store: AnyStore) -> None:
    fresh, _ = await store.create(new(due_in=-10))
    retry, _ = await store.create(new())
    retry_at = time.time() - 5  # due after the fresh one
    await finish(store, await claim(store, retry.id), Status.DEFERRED, next_attempt_at=retry_at)
    [first] = await store.claim_due(limit=1, lease_seconds=LEASE)
    assert first.id == fresh.id


async def test_an_expired_lease_is_claimed_again(store: AnyStore) -> None:
    created, _ = await store.create(new())
    await claim(store, created.id, lease_seconds=0.05)
    reclaimed: list[Notification] = []

    async def taken_again() -> bool:
        reclaimed.extend(await store.claim_due(limit=10, lease_seconds=LEASE))
        return bool(reclaimed)

    await wait_for(taken_again, within=5)
    assert [n.id for n in reclaimed] == [created.id]
    assert reclaimed[0].attempt_count == 0  # a dead worker's claim costs no attempt


# -- recording outcomes -------------------------------------------------------------------


async def test_a_sent_attempt_is_recorded(store: AnyStore) -> None:
    created, _ = await store.create(new())
    await finish(store, await claim(store, created.id))
    sent = await store.get(created.id, owner=None)
    assert sent is not None and sent.status is Status.SENT
    assert sent.sent_at is not None and sent.sent_at >= created.created_at
    assert sent.subject == "Welcome, Ada" and sent.last_error is None and sent.due_at is None
    assert sent.attempt_count == 1
    [attempt] = sent.attempts
    assert (attempt.outcome, attempt.smtp_code, attempt.detail) == ("sent", 250, "250 2.0.0 Ok")


async def test_a_deferred_attempt_is_retried_with_what_is_left(store: AnyStore) -> None:
    created, _ = await store.create(new(to=["ada@example.com", "bob@example.com"]))
    refusal = Refusal(email="bob@example.com", code=550, message="no such user")
    await finish(
        store,
        await claim(store, created.id),
        Status.DEFERRED,
        next_attempt_at=time.time() - 1,
        pending=("ada@example.com",),
        refused=(refusal,),
        detail="451 try later",
    )
    deferred = await store.get(created.id, owner=None)
    assert deferred is not None and deferred.status is Status.DEFERRED
    assert deferred.pending == ["ada@example.com"] and deferred.refused == [refusal]
    assert deferred.last_error == "451 try later" and deferred.sent_at is None
    [retry] = await store.claim_due(limit=10, lease_seconds=LEASE)
    assert retry.id == created.id and retry.attempt_count == 1
    assert retry.pending == ["ada@example.com"] and retry.refused == [refusal]
    await finish(store, retry, refused=(refusal,))
    sent = await store.get(created.id, owner=None)
    assert sent is not None and sent.attempt_count == 2 and len(sent.attempts) == 2
    assert sent.last_error is None  # sent: the refusal is in `refused`, not an error


async def test_a_released_claim_goes_back_without_an_attempt(store: AnyStore) -> None:
    created, _ = await store.create(new())
    at = time.time() + 3600
    await release(store, await claim(store, created.id), at=at)
    queued = await store.get(created.id, owner=None)
    assert queued is not None and queued.status is Status.QUEUED
    assert queued.due_at == at and queued.attempt_count == 0 and queued.attempts == []
    await release(store, await claim(store, created.id), at=time.time())
    await finish(store, await claim(store, created.id), Status.DEFERRED, next_attempt_at=1.0)
    [retry] = await store.claim_due(limit=1, lease_seconds=LEASE)
    await release(store, retry, at=at)
    deferred = await store.get(created.id, owner=None)
    assert deferred is not None and deferred.status is Status.DEFERRED  # it had an attempt
    assert deferred.attempt_count == 1


# -- fencing ------------------------------------------------------------------------------


async def _claimed_twice(store: AnyStore) -> tuple[Notification, Notification]:
    """The same notification claimed by a worker whose lease expired, then by another."""
    created, _ = await store.create(new())
    stale = await claim(store, created.id, lease_seconds=0.05)
    current: list[Notification] = []

    async def taken_again() -> bool:
        current.extend(await store.claim_due(limit=1, lease_seconds=LEASE))
        return bool(current)

    await wait_for(taken_again, within=5)
    return stale, current[0]


@pytest.mark.usefixtures("fencing")
async def test_an_expired_claim_cannot_record_over_the_new_one(store: AnyStore) -> None:
    stale, current = await _claimed_twice(store)
    assert await finish(store, stale) is False
    unchanged = await store.get(stale.id, owner=None)
    assert unchanged is not None and unchanged.status is Status.SENDING
    assert unchanged.attempts == [] and unchanged.attempt_count == 0
    assert await finish(store, current, Status.DEFERRED, next_attempt_at=1.0) is True
    assert await finish(store, current) is False  # once recorded, the claim is spent
    deferred = await store.get(stale.id, owner=None)
    assert deferred is not None and deferred.status is Status.DEFERRED
    assert deferred.attempt_count == 1


@pytest.mark.usefixtures("fencing")
async def test_an_expired_claim_cannot_give_the_new_one_back(store: AnyStore) -> None:
    stale, current = await _claimed_twice(store)
    assert await release(store, stale, at=time.time()) is False
    still = await store.get(stale.id, owner=None)
    assert still is not None and still.status is Status.SENDING
    assert await release(store, current, at=time.time()) is True


@pytest.mark.usefixtures("fencing")
async def test_each_claim_takes_a_new_lease(store: AnyStore) -> None:
    stale, current = await _claimed_twice(store)
    tokens = {lease(stale), lease(current)}
    assert None not in tokens and len(tokens) == 2


# -- cancelling ---------------------------------------------------------------------------


async def test_cancel_stops_waiting_notifications_only(store: AnyStore) -> None:
    queued, _ = await store.create(new())
    scheduled, _ = await store.create(new(status=Status.SCHEDULED, due_in=3600))
    sending, _ = await store.create(new())
    await claim(store, sending.id)
    assert await store.cancel(queued.id, owner=None) == (True, Status.CANCELLED)
    assert await store.cancel(scheduled.id, owner=None) == (True, Status.CANCELLED)
    assert await store.cancel(queued.id, owner=None) == (False, Status.CANCELLED)
    assert await store.cancel(sending.id, owner=None) == (False, Status.SENDING)
    assert await store.cancel(new_uuid(), owner=None) == (False, None)
    cancelled = await store.get(scheduled.id, owner=None)
    assert cancelled is not None and cancelled.status is Status.CANCELLED
    assert cancelled.due_at is None
    assert await store.claim_due(limit=10, lease_seconds=LEASE) == []


# -- searching ----------------------------------------------------------------------------


async def test_search_filters_by_status_tag_and_time(store: AnyStore) -> None:
    t = time.time() - 100
    a = new(created_at=t, tags=["welcome", "eu"])
    b = new(created_at=t + 10, tags=["eu"])
    c = new(created_at=t + 20, status=Status.SCHEDULED, due_in=3600)
    await store.create_many([a, b, c])

    async def ids(**query: Any) -> list[str]:
        found = await store.search(NotificationFilter(**query), owner=None, limit=10, after=None)
        return [n.id for n in found]

    assert await ids() == [c.id, b.id, a.id]
    assert await ids(status=Status.SCHEDULED) == [c.id]
    assert await ids(tag="eu") == [b.id, a.id]
    assert await ids(tag="welcome") == [a.id]
    assert await ids(tag="e") == []  # whole tags only
    assert await ids(created_after=t + 10) == [c.id, b.id]
    assert await ids(created_before=t + 10) == [a.id]
    assert await ids(status=Status.QUEUED, tag="eu", created_after=t + 5) == [b.id]


async def test_search_pages_through_everything_newest_first(store: AnyStore) -> None:
    t = time.time() - 100
    # pairs share a creation time, so the id must break ties for the cursor to be exact
    batch = [new(created_at=t + i // 2) for i in range(11)]
    await store.create_many(batch)
    expected = [n.id for n in sorted(batch, key=lambda n: (n.created_at, n.id), reverse=True)]
    seen: list[str] = []
    after: tuple[float, str] | None = None
    while page := await store.search(NotificationFilter(), owner=None, limit=3, after=after):
        assert len(page) <= 3
        seen += [n.id for n in page]
        after = (page[-1].created_at, page[-1].id)
    assert seen == expected


async def test_search_filters_by_template_and_recipient(store: AnyStore) -> None:
    t = time.time() - 100
    to = new(created_at=t, to=["Ada <ada@example.com>", "bob@example.com"])
    cc = new(created_at=t + 1, template="password_reset", to=[NOBODY], cc=["Bob@Example.COM"])
    bcc = new(created_at=t + 2, to=[NOBODY], bcc=["bob@example.com"])
    # the address in the context only: the mail did not go to it
    mentioned = new(
        created_at=t + 3, to=[NOBODY], context={"name": "bob@example.com", "x": '"bob@x"'}
    )
    other = new(created_at=t + 4, to=["bobby@example.com", "rebob@example.com"])
    await store.create_many([to, cc, bcc, mentioned, other])

    async def ids(**query: Any) -> list[str]:
        found = await store.search(NotificationFilter(**query), owner=None, limit=10, after=None)
        return [n.id for n in found]

    assert await ids(template="password_reset") == [cc.id]
    assert await ids(template="password") == []  # whole names only
    assert await ids(recipient="bob@example.com") == [bcc.id, cc.id, to.id]
    assert await ids(recipient="BOB@example.com") == [bcc.id, cc.id, to.id]  # ASCII case
    assert await ids(recipient="ada@example.com") == [to.id]
    assert await ids(recipient="example.com") == []  # whole addresses only
    assert await ids(recipient="bob@example.com", template="welcome") == [bcc.id, to.id]
    assert await ids(recipient="bob@example.com", created_after=t + 1) == [bcc.id, cc.id]
    assert (
        await store.search(
            NotificationFilter(recipient="bob@example.com"), owner="someone", limit=10, after=None
        )
        == []
    )


async def test_recipient_pages_are_full_however_many_rows_only_mention_the_address(
    store: AnyStore,
) -> None:
    """Rows that hold the address elsewhere (the context) do not count, nor cut a page short."""
    t = time.time() - 100
    batch = [
        new(created_at=t + i, to=["ada@example.com"])
        if i % 4 == 0
        else new(created_at=t + i, to=[NOBODY], context={"name": "ada@example.com"})
        for i in range(20)
    ]
    await store.create_many(batch)
    expected = [n.id for n in reversed(batch) if n.request.to[0].email == "ada@example.com"]
    seen: list[str] = []
    after: tuple[float, str] | None = None
    query = NotificationFilter(recipient="ada@example.com")
    while page := await store.search(query, owner=None, limit=2, after=after):
        assert len(page) == 2 or seen + [n.id for n in page] == expected
        seen += [n.id for n in page]
        after = (page[-1].created_at, page[-1].id)
    assert seen == expected


NOBODY = "nobody@example.net"
ADDRESSES = ("ada@example.com", "Ada@example.com", "bob@example.com", "ada@example.org")


@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(("to", "cc", "bcc", "context")), st.sampled_from(ADDRESSES)),
        max_size=10,
    ),
    wanted=st.sampled_from([*ADDRESSES, "ADA@EXAMPLE.COM", "ada@example"]),
    page=st.integers(1, 4),
)
async def test_recipient_search_pages_hold_exactly_the_mail_to_that_address(
    store: AnyStore, rows: list[tuple[str, str]], wanted: str, page: int
) -> None:
    run = new_uuid()[:8]  # the store outlives each example: a caller of the example's own
    t = time.time() - 100
    batch = []
    for i, (field, address) in enumerate(rows):
        placed: dict[str, Any] = {"to": [address] if field == "to" else [NOBODY]}
        if field in ("cc", "bcc"):
            placed[field] = [address]
        elif field == "context":
            placed["context"] = {"name": address}
        batch.append(new(caller=run, created_at=t + i // 2, **placed))
    await store.create_many(batch)
    newest_first = sorted(batch, key=lambda n: (n.created_at, n.id), reverse=True)
    expected = [
        n.id
        for (field, address), n in sorted(
            zip(rows, batch, strict=True), key=lambda r: (r[1].created_at, r[1].id), reverse=True
        )
        if field != "context" and address.lower() == wanted.lower()
    ]
    assert len(newest_first) == len(batch)
    seen: list[str] = []
    after: tuple[float, str] | None = None
    query = NotificationFilter(recipient=wanted)
    while found := await store.search(query, owner=run, limit=page, after=after):
        seen += [n.id for n in found]
        after = (found[-1].created_at, found[-1].id)
    assert seen == expected


async def test_search_shows_each_notifications_attempts(store: AnyStore) -> None:
    tried, _ = await store.create(new())
    await store.create(new())
    await finish(store, await claim(store, tried.id), Status.DEFERRED, next_attempt_at=1.0)
    found = await store.search(NotificationFilter(), owner=None, limit=10, after=None)
    attempts = {n.id: (n.attempt_count, len(n.attempts)) for n in found}
    assert attempts[tried.id] == (1, 1)
    assert sorted(attempts.values()) == [(0, 0), (1, 1)]


# -- ownership ----------------------------------------------------------------------------


async def test_another_callers_notification_reads_as_unknown(store: AnyStore) -> None:
    billing, _ = await store.create(new(caller="billing"))
    assert await store.get(billing.id, owner="web") is None
    assert await store.get(billing.id, owner="billing") == billing
    assert await store.get(billing.id, owner=None) == billing  # an admin's view: anyone's
    assert await store.get(new_uuid(), owner="billing") is None


async def test_cancelling_another_callers_notification_changes_nothing_and_tells_nothing(
    store: AnyStore,
) -> None:
    billing, _ = await store.create(new(caller="billing"))
    sending, _ = await store.create(new(caller="billing"))
    await claim(store, sending.id)
    # as for an unknown id: not even the status that would forbid it
    assert await store.cancel(billing.id, owner="web") == (False, None)
    assert await store.cancel(sending.id, owner="web") == (False, None)
    untouched = await store.get(billing.id, owner=None)
    assert untouched is not None and untouched.status is Status.QUEUED
    assert [n.id for n in await store.claim_due(limit=10, lease_seconds=LEASE)] == [billing.id]
    assert await store.cancel(sending.id, owner="billing") == (False, Status.SENDING)


async def test_an_admin_cancels_any_callers_notification(store: AnyStore) -> None:
    billing, _ = await store.create(new(caller="billing"))
    assert await store.cancel(billing.id, owner=None) == (True, Status.CANCELLED)
    assert await store.cancel(billing.id, owner="web") == (False, None)
    assert await store.cancel(billing.id, owner="billing") == (False, Status.CANCELLED)


async def test_search_shows_the_owners_notifications_and_everyones_without_one(
    store: AnyStore,
) -> None:
    t = time.time() - 100
    a = new(caller="billing", created_at=t, tags=["eu"])
    b = new(caller="web", created_at=t + 1, tags=["eu"])
    c = new(caller="billing", created_at=t + 2, status=Status.SCHEDULED, due_in=3600)
    await store.create_many([a, b, c])

    async def ids(owner: str | None, **query: Any) -> list[str]:
        found = await store.search(NotificationFilter(**query), owner=owner, limit=10, after=None)
        return [n.id for n in found]

    assert await ids("billing") == [c.id, a.id]
    assert await ids("web") == [b.id]
    assert await ids("ops") == []
    assert await ids(None) == [c.id, b.id, a.id]
    assert await ids("billing", tag="eu") == [a.id]
    assert await ids("web", status=Status.SCHEDULED) == []
    assert await ids("billing", created_after=t + 1) == [c.id]


async def test_idempotency_replays_stay_with_each_caller(store: AnyStore) -> None:
    keyed: dict[str, Any] = {"idempotency_key": "k", "fingerprint": "f", "idempotency_ttl": 60.0}
    billing, _ = await store.create(new(caller="billing"), **keyed)
    web, _ = await store.create(new(caller="web"), **keyed)
    for caller, first in (("billing", billing), ("web", web)):
        again, replayed = await store.create(new(caller=caller), **keyed)
        assert replayed and again.id == first.id and again.caller == caller
    assert await store.count_by_status() == {"queued": 2}


CALLERS = ("billing", "web", "ops")


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(st.sampled_from(CALLERS), st.integers(0, 3)), max_size=12),
    owner=st.sampled_from(CALLERS),
    page=st.integers(1, 4),
    start=st.integers(0, 12),
)
async def test_a_callers_pages_from_any_cursor_hold_exactly_its_own_later_rows(
    store: AnyStore, rows: list[tuple[str, int]], owner: str, page: int, start: int
) -> None:
    """Whoever's row a cursor was taken from (another caller's list made it, say), paging on
    with it shows the owner's own rows after that point, each once, and no one else's."""
    run = new_uuid()[:8]  # the store outlives each example: callers of the example's own
    t = time.time() - 100  # few distinct times: rows share them, and the id breaks ties
    batch = [new(caller=f"{run}-{caller}", created_at=t + second) for caller, second in rows]
    await store.create_many(batch)
    newest_first = sorted(batch, key=lambda n: (n.created_at, n.id), reverse=True)
    after = None
    if start < len(newest_first):
        after = (newest_first[start].created_at, newest_first[start].id)
    expected = [
        n.id
        for n in newest_first
        if n.caller == f"{run}-{owner}" and (after is None or (n.created_at, n.id) < after)
    ]
    seen: list[str] = []
    while found := await store.search(
        NotificationFilter(), owner=f"{run}-{owner}", limit=page, after=after
    ):
        assert len(found) <= page
        seen += [n.id for n in found]
        after = (found[-1].created_at, found[-1].id)
    assert seen == expected


# -- workers ------------------------------------------------------------------------------


async def test_heartbeats_tell_when_a_worker_last_beat(store: AnyStore) -> None:
    assert await store.last_heartbeat() is None
    before = time.time()
    await store.record_heartbeat("alpha:1")
    first = await store.last_heartbeat()
    assert first is not None and before <= first <= time.time()
    await wait_for(lambda: time.time() > first)  # the next beat gets a later time
    await store.record_heartbeat("beta.example:2")
    await store.record_heartbeat("alpha:1")  # the same worker again: one row, a later time
    latest = await store.last_heartbeat()
    assert latest is not None and latest > first
    assert await store.last_heartbeat(host="alpha") == latest
    beta = await store.last_heartbeat(host="beta.example")
    assert beta is not None and first < beta <= latest
    # a host is a whole name before the colon, and nothing else matches it
    for other in ("alph", "alpha:1", "beta", "", "%", "gamma"):
        assert await store.last_heartbeat(host=other) is None, other


async def test_workers_silent_for_a_day_are_forgotten(
    store: AnyStore, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    long_ago = time.time() - 86400 - 60
    # a worker that died a day ago, as its last beat left it
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "notifications.db") as db:
            db.execute("INSERT INTO heartbeats VALUES ('gone:1', ?)", (long_ago,))
    else:
        connection = await asyncpg.connect(request.getfixturevalue("postgres_session_url"))
        try:
            await connection.execute("INSERT INTO heartbeats VALUES ('gone:1', $1)", long_ago)
        finally:
            await connection.close()
    assert await store.last_heartbeat(host="gone") == long_ago
    await store.record_heartbeat("alive:2")
    assert await store.last_heartbeat(host="gone") is None
    assert await store.last_heartbeat(host="alive") is not None


# -- retrying and the message as sent -------------------------------------------------------


async def failed(store: AnyStore, **kwargs: Any) -> Notification:
    """A notification whose one attempt failed: one recipient refused for good."""
    created, _ = await store.create(new(**kwargs))
    claimed = await claim(store, created.id)
    refusal = Refusal("ada@example.com", 550, "no such user")
    await finish(store, claimed, Status.FAILED, refused=(refusal,), detail="all refused")
    return created


async def test_a_failed_notification_is_retried_with_a_new_budget(store: AnyStore) -> None:
    created = await failed(store)
    before = time.time()
    assert await store.retry(created.id, owner=None) == (True, Status.QUEUED)
    retried = await store.get(created.id, owner=None)
    assert retried is not None and retried.status is Status.QUEUED
    assert retried.message_id == created.message_id
    assert (retried.attempt_count, retried.refused, retried.pending) == (0, [], None)
    assert retried.last_error is None
    assert retried.retried_at is not None and retried.retried_at >= before - 1
    assert len(retried.attempts) == 1  # the history stays
    assert [n.id for n in await store.claim_due(limit=10, lease_seconds=LEASE)] == [created.id]


async def test_only_a_failed_notification_is_retried(store: AnyStore) -> None:
    queued, _ = await store.create(new())
    scheduled, _ = await store.create(new(status=Status.SCHEDULED, due_in=3600))
    sending, _ = await store.create(new())
    await claim(store, sending.id)
    sent, _ = await store.create(new())
    await finish(store, await claim(store, sent.id))
    cancelled, _ = await store.create(new())
    await store.cancel(cancelled.id, owner=None)
    deferred, _ = await store.create(new())
    await finish(store, await claim(store, deferred.id), Status.DEFERRED, next_attempt_at=1e12)
    for n, status in [
        (queued, Status.QUEUED),
        (scheduled, Status.SCHEDULED),
        (sending, Status.SENDING),
        (sent, Status.SENT),
        (cancelled, Status.CANCELLED),
        (deferred, Status.DEFERRED),
    ]:
        assert await store.retry(n.id, owner=None) == (False, status)
        unchanged = await store.get(n.id, owner=None)
        assert unchanged is not None and unchanged.status is status
    assert await store.retry(new_uuid(), owner=None) == (False, None)


async def test_of_two_retries_one_applies(store: AnyStore) -> None:
    created = await failed(store)
    first, second = (
        await store.retry(created.id, owner=None),
        await store.retry(created.id, owner=None),
    )
    assert [first, second] == [(True, Status.QUEUED), (False, Status.QUEUED)]


async def test_concurrent_retries_make_one(store: AnyStore) -> None:
    import asyncio

    created = await failed(store)
    results = await asyncio.gather(*(store.retry(created.id, owner=None) for _ in range(5)))
    assert sorted(r[0] for r in results) == [False] * 4 + [True]


async def test_retrying_another_callers_notification_changes_nothing_and_tells_nothing(
    store: AnyStore,
) -> None:
    created = await failed(store, caller="billing")
    assert await store.retry(created.id, owner="web") == (False, None)
    untouched = await store.get(created.id, owner=None)
    assert untouched is not None and untouched.status is Status.FAILED
    assert await store.retry(created.id, owner="billing") == (True, Status.QUEUED)


async def test_the_message_as_sent_is_kept_with_the_outcome(store: AnyStore) -> None:
    created, _ = await store.create(new(caller="billing"))
    assert await store.sent_message(created.id, owner=None) is None
    data = b"Subject: hi\r\n\r\n" + bytes(range(256)) * 100
    await store.finish_attempt(
        await claim(store, created.id),
        status=Status.DEFERRED,
        attempt=AttemptRecord(
            at=time.time(), outcome="deferred", smtp_code=451, detail="later", duration_ms=1.0
        ),
        subject=None,
        pending=["b@example.com"],
        delivered=["a@example.com"],
        refused=[],
        last_error="later",
        next_attempt_at=time.time(),
        message=data,
    )
    assert await store.sent_message(created.id, owner="billing") == data
    assert await store.sent_message(created.id, owner="web") is None
    # an attempt that sent nothing keeps what the earlier one sent
    (again,) = await store.claim_due(limit=1, lease_seconds=LEASE)
    await finish(store, again, Status.FAILED)
    assert await store.sent_message(created.id, owner=None) == data


async def test_each_attempt_keeps_its_outcome_per_recipient(store: AnyStore) -> None:
    from app.store.records import RecipientAttempt

    created, _ = await store.create(new())
    each = (
        RecipientAttempt("a@example.com", "delivered"),
        RecipientAttempt("b@example.com", "refused", 550, "no such user"),
        RecipientAttempt("c@example.com", "deferred", 451, "greylisted"),
    )
    attempt = AttemptRecord(
        at=time.time(),
        outcome="deferred",
        smtp_code=451,
        detail="d",
        duration_ms=3.0,
        recipients=each,
    )
    await store.finish_attempt(
        await claim(store, created.id),
        status=Status.DEFERRED,
        attempt=attempt,
        subject=None,
        pending=["c@example.com"],
        delivered=["a@example.com"],
        refused=[],
        last_error="d",
        next_attempt_at=time.time() + 60,
    )
    shown = await store.get(created.id, owner=None)
    assert shown is not None and shown.attempts[0].recipients == each
    listed = await store.search(NotificationFilter(), owner=None, limit=10, after=None)
    assert listed[0].attempts[0].recipients == each


# -- suppressions -----------------------------------------------------------------------


def entry(
    address: str, *, caller: str = "web", reason: str = "manual", category: str | None = None
) -> Any:
    from app.store.records import Suppression

    return Suppression(caller=caller, address=address, reason=reason, category=category)


async def test_an_entry_for_every_category_suppresses_all_of_the_callers_mail(
    store: AnyStore,
) -> None:
    await store.suppress([entry("Ada@Example.com", reason="hard_bounce")])
    for category in (None, "newsletter", "billing"):
        found = await store.suppressed_among(
            "web", ["ADA@example.com", "bob@example.com"], category=category
        )
        assert list(found) == ["ada@example.com"]
        assert found["ada@example.com"].reason == "hard_bounce"
    assert await store.suppressed_among("billing", ["ada@example.com"], category=None) == {}


async def test_an_entry_for_one_category_suppresses_that_category_only(store: AnyStore) -> None:
    await store.suppress([entry("ada@example.com", reason="unsubscribe", category="newsletter")])
    assert list(await store.suppressed_among("web", ["ada@example.com"], category="newsletter"))
    assert await store.suppressed_among("web", ["ada@example.com"], category="billing") == {}
    assert await store.suppressed_among("web", ["ada@example.com"], category=None) == {}


async def test_suppressing_again_keeps_the_first_reason_and_put_replaces_it(
    store: AnyStore,
) -> None:
    await store.suppress([entry("ada@example.com", reason="hard_bounce")])
    await store.suppress([entry("ada@example.com", reason="unsubscribe")])
    [kept] = await store.suppressions(owner="web", limit=10)
    assert kept.reason == "hard_bounce" and kept.created_at > 0
    assert await store.put_suppression(entry("ada@example.com", reason="complaint")) is False
    assert await store.put_suppression(entry("bob@example.com")) is True
    listed = await store.suppressions(owner="web", limit=10)
    assert [(s.address, s.reason) for s in listed] == [
        ("ada@example.com", "complaint"),
        ("bob@example.com", "manual"),
    ]


async def test_unsuppress_removes_one_category_or_all_and_only_the_owners(
    store: AnyStore,
) -> None:
    await store.suppress(
        [
            entry("ada@example.com"),
            entry("ada@example.com", category="newsletter"),
            entry("ada@example.com", caller="billing"),
        ]
    )
    one = await store.unsuppress(
        "ADA@example.com", owner="web", category="newsletter", every_category=False
    )
    assert one == 1
    assert (
        await store.unsuppress(
            "ada@example.com", owner="web", category="newsletter", every_category=False
        )
        == 0
    )
    assert (
        await store.unsuppress("ada@example.com", owner="web", category=None, every_category=True)
        == 1
    )
    assert [s.caller for s in await store.suppressions(owner=None, limit=10)] == ["billing"]
    assert (
        await store.unsuppress("ada@example.com", owner=None, category=None, every_category=True)
        == 1
    )
    assert await store.suppressions(owner=None, limit=10) == []


async def test_the_list_filters_and_pages_through_every_entry_once(store: AnyStore) -> None:
    entries = [
        entry(f"user{i:02}@example.com", caller=caller, reason=reason, category=category)
        for i in range(7)
        for caller, reason, category in (
            ("web", "manual", None),
            ("web", "unsubscribe", "newsletter"),
            ("billing", "hard_bounce", None),
        )
    ]
    await store.suppress(entries)
    seen: list[tuple[str, str, str]] = []
    after = None
    while True:
        page = await store.suppressions(owner=None, limit=4, after=after)
        seen += [(s.address, s.caller, s.category or "") for s in page]
        if len(page) < 4:
            break
        last = page[-1]
        after = (last.address, last.caller, last.category or "")
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 21
    mine = await store.suppressions(owner="web", limit=100)
    assert {s.caller for s in mine} == {"web"} and len(mine) == 14
    unsubscribed = await store.suppressions(owner=None, reason="unsubscribe", limit=100)
    assert {s.category for s in unsubscribed} == {"newsletter"} and len(unsubscribed) == 7
    one = await store.suppressions(owner=None, address="USER03@example.com", limit=100)
    assert {s.address for s in one} == {"user03@example.com"} and len(one) == 3
    newsletter = await store.suppressions(owner="web", category="newsletter", limit=100)
    assert len(newsletter) == 7


async def test_a_notification_ends_suppressed_through_finish_attempt(store: AnyStore) -> None:
    from app.api.schemas import RecipientOutcome
    from app.store.records import RecipientAttempt, Skipped

    created, _ = await store.create(new())
    skipped = [Skipped("ada@example.com", "hard_bounce")]
    applied = await store.finish_attempt(
        await claim(store, created.id),
        status=Status.SUPPRESSED,
        attempt=AttemptRecord(
            at=time.time(),
            outcome="suppressed",
            smtp_code=None,
            detail="every recipient is suppressed",
            duration_ms=0.5,
            recipients=(RecipientAttempt("ada@example.com", "suppressed", None, "hard_bounce"),),
        ),
        subject="Welcome, Ada",
        pending=[],
        delivered=[],
        refused=[],
        last_error="every recipient is suppressed",
        next_attempt_at=None,
        suppressed=skipped,
    )
    assert applied
    shown = await store.get(created.id, owner=None)
    assert shown is not None and shown.status is Status.SUPPRESSED
    assert shown.suppressed == skipped
    assert shown.recipient_outcomes() == [
        ("ada@example.com", RecipientOutcome.SUPPRESSED, skipped[0])
    ]
    assert await store.count_waiting() == 0
    assert await store.claim_due(limit=10, lease_seconds=LEASE) == []
    assert await store.retry(created.id, owner=None) == (False, Status.SUPPRESSED)


async def test_a_retry_forgets_who_was_skipped(store: AnyStore) -> None:
    from app.store.records import Skipped

    created, _ = await store.create(new())
    await store.finish_attempt(
        await claim(store, created.id),
        status=Status.FAILED,
        attempt=AttemptRecord(
            at=time.time(), outcome="failed", smtp_code=554, detail="no", duration_ms=1.0
        ),
        subject=None,
        pending=[],
        delivered=[],
        refused=[],
        last_error="no",
        next_attempt_at=None,
        suppressed=[Skipped("bob@example.com", "manual")],
    )
    assert await store.retry(created.id, owner=None) == (True, Status.QUEUED)
    retried = await store.get(created.id, owner=None)
    assert retried is not None and retried.suppressed == []


async def test_a_retry_lifts_the_hard_bounces_of_its_refusals_and_nothing_else(
    store: AnyStore,
) -> None:
    created = await failed(store, caller="alice")  # ada@example.com refused with 550
    await store.suppress(
        [
            entry("Ada@Example.com", caller="alice", reason="hard_bounce"),  # its refusal's
            entry("ada@example.com", caller="bob", reason="hard_bounce"),  # another caller's
            entry("ada@example.com", caller="alice", reason="unsubscribe", category="news"),
            entry("cy@example.com", caller="alice", reason="hard_bounce"),  # not refused here
        ]
    )
    assert await store.retry(created.id, owner=None) == (True, Status.QUEUED)
    left = await store.suppressions(owner=None, limit=10)
    assert sorted((s.caller, s.address, s.reason) for s in left) == [
        ("alice", "ada@example.com", "unsubscribe"),
        ("alice", "cy@example.com", "hard_bounce"),
        ("bob", "ada@example.com", "hard_bounce"),
    ]


async def test_search_filters_by_template_and_a_part_of_the_last_error(store: AnyStore) -> None:
    refused = await failed(store)  # last_error "all refused"
    other, _ = await store.create(new(template="receipt"))
    await finish(store, await claim(store, other.id), Status.FAILED, detail="554 5.6.0 rejected")

    async def ids(**kwargs: Any) -> set[str]:
        found = await store.search(NotificationFilter(**kwargs), owner=None, limit=10, after=None)
        return {n.id for n in found}

    assert await ids(template="receipt") == {other.id}
    assert await ids(error_contains="554") == {other.id}
    assert await ids(error_contains="refused") == {refused.id}
    assert await ids(error_contains="REFUSED") == set()  # case counts
    assert await ids(error_contains="%") == set()  # no pattern characters
    assert await ids(template="welcome", error_contains="554") == set()


# -- the webhook outbox ---------------------------------------------------------------------

HOOK = "https://hooks.example.com/notifier"


async def _attempted(store: AnyStore, notification_id: str, status: Status) -> None:
    """One attempt of the notification, recorded as `status` (deferred ones are due at once)."""
    claimed = await store.claim(notification_id, lease_seconds=LEASE) or next(
        n for n in await store.claim_due(limit=100, lease_seconds=LEASE) if n.id == notification_id
    )
    due = time.time() - 1 if status is Status.DEFERRED else None
    assert await finish(store, claimed, status, next_attempt_at=due)


async def _with_events(store: AnyStore, *statuses: Status, caller: str = "alice") -> str:
    created, _ = await store.create(new(callback_url=HOOK, caller=caller, tags=["t"]))
    for status in statuses:
        await _attempted(store, created.id, status)
    return created.id


async def _done(store: AnyStore, event: Any, status: str = "delivered") -> bool:
    from app.webhooks.events import EventAttempt, EventStatus

    ok = status == "delivered"
    return await store.finish_event(
        event,
        status=EventStatus(status),
        attempt=EventAttempt(
            at=time.time(),
            status_code=204 if ok else 500,
            error=None if ok else "the receiver answered 500",
            duration_ms=3.0,
        ),
        next_attempt_at=time.time() - 1 if status == "pending" else None,
    )


async def test_each_state_change_worth_telling_writes_its_event_with_it(store: AnyStore) -> None:
    import json

    from app.api.views import recipient_status

    notification_id = await _with_events(store, Status.DEFERRED, Status.SENT)
    events = await store.events(notification_id, owner=None)
    assert [e.type for e in events] == ["notification.deferred", "notification.sent"]
    assert [e.status for e in events] == ["pending", "pending"]
    assert all(e.url == HOOK and e.caller == "alice" and e.attempts == [] for e in events)
    assert len({e.id for e in events}) == 2
    body = json.loads(events[1].body)
    assert body["id"] == events[1].id and body["type"] == "notification.sent"
    assert body["caller"] == "alice"  # signed with the rest: whose event it is
    shown = await store.get(notification_id, owner=None)
    assert shown is not None
    assert body["notification"] == {
        "id": notification_id,
        "status": "sent",
        "template": "welcome",
        # as the notification reads back (this attempt recorded no recipient as delivered)
        "recipients": [
            recipient_status(e, o, why).model_dump(mode="json")
            for e, o, why in shown.recipient_outcomes()
        ],
        "attempts": 2,
        "last_error": None,
        "message_id": shown.message_id,
        "tags": ["t"],
        "metadata": {},
    }


async def test_no_callback_url_or_no_change_worth_telling_writes_no_event(
    store: AnyStore,
) -> None:
    plain, _ = await store.create(new())
    await _attempted(store, plain.id, Status.SENT)
    assert await store.events(plain.id, owner=None) == []
    hooked, _ = await store.create(new(callback_url=HOOK))
    claimed = await claim(store, hooked.id)
    assert await release(store, claimed, at=time.time())  # given back: no state worth telling
    assert await store.events(hooked.id, owner=None) == []
    assert await store.claim_events(limit=10, lease_seconds=LEASE) == []


async def test_an_attempt_whose_lease_was_taken_over_writes_no_event(store: AnyStore) -> None:
    created, _ = await store.create(new(callback_url=HOOK))
    stale = await claim(store, created.id, lease_seconds=0)
    (current,) = await store.claim_due(limit=1, lease_seconds=LEASE)
    assert not await finish(store, stale, Status.FAILED)
    assert await store.events(created.id, owner=None) == []
    assert await finish(store, current, Status.SENT)
    assert [e.type for e in await store.events(created.id, owner=None)] == ["notification.sent"]


async def test_cancelling_writes_the_cancelled_event(store: AnyStore) -> None:
    import json

    created, _ = await store.create(new(callback_url=HOOK, status=Status.SCHEDULED, due_in=600))
    assert await store.cancel(created.id, owner=None) == (True, Status.CANCELLED)
    (event,) = await store.events(created.id, owner=None)
    assert event.type == "notification.cancelled"
    recipients = json.loads(event.body)["notification"]["recipients"]
    assert [r["status"] for r in recipients] == ["cancelled"]
    assert await store.cancel(created.id, owner=None) == (False, Status.CANCELLED)
    assert len(await store.events(created.id, owner=None)) == 1


async def test_a_notifications_events_are_claimed_one_at_a_time_in_order(
    store: AnyStore,
) -> None:
    a = await _with_events(store, Status.DEFERRED, Status.DEFERRED, Status.SENT)
    b = await _with_events(store, Status.FAILED)
    first = await store.claim_events(limit=10, lease_seconds=LEASE)
    assert sorted((e.notification_id, e.type) for e in first) == sorted(
        [(a, "notification.deferred"), (b, "notification.failed")]
    )
    assert await store.claim_events(limit=10, lease_seconds=LEASE) == []  # leased, and in turn
    a1 = next(e for e in first if e.notification_id == a)
    assert await _done(store, a1, "pending")  # failed, due again at once: still a's first
    (again,) = await store.claim_events(limit=10, lease_seconds=LEASE)
    assert again.id == a1.id and again.attempt_count == 1
    assert await _done(store, again)
    (a2,) = await store.claim_events(limit=10, lease_seconds=LEASE)
    assert a2.notification_id == a and a2.seq > a1.seq
    assert await _done(store, a2, "failed")  # given up: the next one goes anyway
    (a3,) = await store.claim_events(limit=10, lease_seconds=LEASE)
    assert a3.type == "notification.sent"
    assert await _done(store, a3)
    shown = await store.events(a, owner=None)
    assert [(e.status, len(e.attempts)) for e in shown] == [
        ("delivered", 2),
        ("failed", 1),
        ("delivered", 1),
    ]
    assert [x.status_code for x in shown[0].attempts] == [500, 204]
    assert shown[0].delivered_at is not None and shown[0].next_attempt_at is None
    assert shown[1].last_error == "the receiver answered 500"


async def test_an_event_claim_is_fenced_by_its_lease(store: AnyStore) -> None:
    notification_id = await _with_events(store, Status.SENT)
    (stale,) = await store.claim_events(limit=1, lease_seconds=0)
    (current,) = await store.claim_events(limit=1, lease_seconds=LEASE)  # the lease ran out
    assert current.id == stale.id and current.lease > stale.lease
    assert not await _done(store, stale)
    assert await _done(store, current)
    assert not await _done(store, current)  # once only
    (event,) = await store.events(notification_id, owner=None)
    assert len(event.attempts) == 1


async def test_concurrent_event_claims_never_hand_out_one_event_twice(store: AnyStore) -> None:
    import asyncio

    for _ in range(12):
        await _with_events(store, Status.SENT)
    batches = await asyncio.gather(
        *(store.claim_events(limit=3, lease_seconds=LEASE) for _ in range(8))
    )
    claimed = [e.id for batch in batches for e in batch]
    assert len(claimed) == len(set(claimed)) == 12


async def test_a_claim_takes_a_callers_share_and_then_the_others_events(store: AnyStore) -> None:
    alices = [await _with_events(store, Status.SENT) for _ in range(5)]
    bobs = await _with_events(store, Status.SENT, caller="bob")  # due after all of alice's
    claimed = await store.claim_events(limit=10, lease_seconds=LEASE, per_caller=2)
    assert [e.notification_id for e in claimed] == [*alices[:2], bobs]
    # what is in flight counts: alice has her share, so she gets none; carol has room for one
    carols = [await _with_events(store, Status.SENT, caller="carol") for _ in range(2)]
    claimed = await store.claim_events(
        limit=10, lease_seconds=LEASE, per_caller=2, in_flight={"alice": 2, "carol": 1}
    )
    assert [e.notification_id for e in claimed] == carols[:1]
    claimed = await store.claim_events(
        limit=10, lease_seconds=LEASE, per_caller=2, in_flight={"alice": 1, "bob": 5}
    )
    assert [e.notification_id for e in claimed] == [alices[2], carols[1]]
    full = {"alice": 2, "bob": 2, "carol": 2}  # alice has two more due, but no room
    assert (
        await store.claim_events(limit=10, lease_seconds=LEASE, per_caller=2, in_flight=full) == []
    )
    assert len(await store.claim_events(limit=10, lease_seconds=LEASE, per_caller=2)) == 2


async def test_a_caller_with_its_share_in_flight_is_passed_over_however_long_its_backlog(
    store: AnyStore,
) -> None:
    """A claim ranks only so many due events; a caller at its share is not among them, so
    another caller's event behind a long backlog is found."""
    for _ in range(40):
        await _with_events(store, Status.SENT)
    bobs = await _with_events(store, Status.SENT, caller="bob")
    first = await store.claim_events(limit=4, lease_seconds=LEASE, per_caller=2)
    assert {e.caller for e in first} == {"alice"} and len(first) == 2
    (then,) = await store.claim_events(
        limit=4, lease_seconds=LEASE, per_caller=2, in_flight={"alice": 2}
    )
    assert then.notification_id == bobs


async def test_concurrent_claims_with_shares_never_hand_out_one_event_twice(
    store: AnyStore,
) -> None:
    import asyncio

    for caller in ("alice", "bob", "carol"):
        for _ in range(4):
            await _with_events(store, Status.SENT, caller=caller)
    batches = await asyncio.gather(
        *(store.claim_events(limit=3, lease_seconds=LEASE, per_caller=2) for _ in range(8))
    )
    claimed = [e for batch in batches for e in batch]
    assert len(claimed) == len({e.id for e in claimed}) > 0
    for batch in batches:
        assert all(sum(e.caller == c for e in batch) <= 2 for c in ("alice", "bob", "carol"))


async def test_events_are_their_owners_only(store: AnyStore) -> None:
    notification_id = await _with_events(store, Status.SENT, caller="billing")
    assert len(await store.events(notification_id, owner="billing")) == 1
    assert await store.events(notification_id, owner="web") == []
    assert len(await store.events(notification_id, owner=None)) == 1
