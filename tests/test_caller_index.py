"""One caller's list stays fast on a big table: its pages are read off the index
notifications_by_caller (caller, created_at, id) in the list's order, on both databases,
whatever else the list is filtered by and wherever its cursor points."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.schemas import Status
from app.store import postgres, sqlite
from app.store.migrations import migrate
from app.store.records import NotificationFilter
from tests.conftest import WELCOME
from tests.postgres import drop_database, scratch_database

INDEX = "notifications_by_caller"

times = st.floats(min_value=0, max_value=2e9, allow_nan=False)
filters = st.builds(
    NotificationFilter,
    status=st.none() | st.sampled_from(Status),
    tag=st.none() | st.text(min_size=1, max_size=5),
    created_after=st.none() | times,
    created_before=st.none() | times,
    template=st.none() | st.sampled_from(["welcome", "password_reset"]),
    recipient=st.none() | st.emails(),
)
cursors = st.none() | st.tuples(times, st.uuids().map(str))


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("index") / "notifications.db"
    asyncio.run(migrate(f"sqlite:///{path}"))
    return path


@settings(max_examples=200, deadline=None)
@given(query=filters, after=cursors, limit=st.integers(1, 200))
def test_sqlite_reads_one_callers_page_off_the_index_without_sorting(
    sqlite_file: Path, query: NotificationFilter, after: tuple[float, str] | None, limit: int
) -> None:
    sql, params = sqlite.search_sql(query, owner="billing", limit=limit, after=after)
    with sqlite3.connect(sqlite_file) as db:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    db.close()
    assert plan[0].startswith(f"SEARCH notifications USING INDEX {INDEX} (caller=?"), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


# -- PostgreSQL: a table big enough for the planner to care, with its statistics ------------

ROWS = 30_000


async def _fill(url: str) -> None:
    """billing sends 1% of the mail, ops 10%, twenty web callers the rest; mostly sent."""
    await migrate(url)
    db = await asyncpg.connect(url)
    try:
        await db.execute(
            "INSERT INTO notifications (id, status, template, caller, request, message_id,"
            " created_at, updated_at) SELECT md5(i::text),"
            " CASE WHEN i % 7 = 0 THEN 'queued' ELSE 'sent' END, 'welcome',"
            " CASE WHEN i % 100 = 0 THEN 'billing' WHEN i % 10 = 0 THEN 'ops'"
            " ELSE 'web' || (i % 20)::text END,"
            " $1, '<m@example.com>', 1.7e9 + i, 1.7e9 + i FROM generate_series(1, $2) AS i",
            json.dumps(WELCOME),
            ROWS,
        )
        await db.execute("ANALYZE notifications")
    finally:
        await db.close()


@pytest.fixture(scope="module")
def big_table() -> Iterator[str]:
    """A database of its own (its statistics must not steer other tests' plans), analysed
    as autovacuum would."""
    url = asyncio.run(scratch_database("notifier_index"))
    try:
        asyncio.run(_fill(url))
        yield url
    finally:
        asyncio.run(drop_database(url))


def _steps(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _steps(child)


def _literal(value: object) -> str:
    return "'{}'".format(str(value).replace("'", "''")) if isinstance(value, str) else repr(value)


PG_CASES = {
    "first page": (NotificationFilter(), None),
    "next page": (NotificationFilter(), (1.7e9 + ROWS / 2, "8")),
    "time range": (NotificationFilter(created_after=1.7e9, created_before=1.7e9 + ROWS), None),
    "template": (NotificationFilter(template="welcome"), None),
    "recipient": (NotificationFilter(recipient="ada@example.com"), None),
}


# A caller with much of the table may rightly be read off notifications_created, skipping
# the others' rows (a few per page); these are the callers for whom that would read the table.
@pytest.mark.parametrize("owner", ["billing", "nobody-yet"])
@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize(("query", "after"), PG_CASES.values(), ids=PG_CASES.keys())
async def test_postgresql_reads_a_small_callers_page_off_the_index_without_sorting(
    big_table: str,
    owner: str,
    plans: str,
    query: NotificationFilter,
    after: tuple[float, str] | None,
) -> None:
    # the store's statements are prepared: after a few runs PostgreSQL may switch to a plan
    # made without the parameters' values, which must walk the index too
    sql, params = postgres.search_sql(query, owner=owner, limit=50, after=after)
    db = await asyncpg.connect(big_table)
    try:
        await db.execute(f"SET plan_cache_mode = {plans}")
        await db.execute(f"PREPARE page AS {sql}")
        arguments = ", ".join(map(_literal, params))
        plan = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE page({arguments})"))
        found = await db.fetch(sql, *params)
    finally:
        await db.close()
    steps = list(_steps(plan[0]["Plan"]))
    assert [s.get("Index Name") for s in steps if "Scan" in s["Node Type"]] == [INDEX], steps
    assert not any(s["Node Type"] == "Sort" for s in steps), steps
    assert {row["caller"] for row in found} <= {owner}
    assert len(found) == (50 if owner == "billing" else 0)
