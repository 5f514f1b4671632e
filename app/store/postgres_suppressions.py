"""The suppression list on PostgreSQL: the part of `PostgresStore` that keeps it.

A category of None is stored as '' (a key column cannot be NULL): an entry in every category.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from app.store.postgres_pool import Connection, PostgresPool
from app.store.records import Suppression

_COLUMNS = "address, caller, category, reason, created_at"
_INSERT = f"INSERT INTO suppressions ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"


class PostgresSuppressions:
    _pool: PostgresPool

    async def suppress(self, entries: Sequence[Suppression]) -> None:
        """Add each entry; one already there keeps its reason and time."""
        rows = [_values(e) for e in entries]
        if rows:
            await self._pool.run(
                lambda db: db.executemany(f"{_INSERT} ON CONFLICT DO NOTHING", rows)
            )

    async def put_suppression(self, entry: Suppression) -> bool:
        """Add one entry, or give the one there this reason; True if it is new."""

        async def put(db: Connection) -> bool:
            # xmax = 0 only for a row this statement inserted (not one it updated)
            inserted: bool = await db.fetchval(
                f"{_INSERT} ON CONFLICT (address, caller, category)"
                " DO UPDATE SET reason = excluded.reason RETURNING xmax = 0",
                *_values(entry),
            )
            return inserted

        return await self._pool.run(put)

    async def unsuppress(
        self, address: str, *, owner: str | None, category: str | None, every_category: bool
    ) -> int:
        """Remove `address` from `owner`'s list (None: every caller's), in `category` (None:
        the entry for every category), or in all its entries with `every_category`."""
        sql = (
            "WITH gone AS (DELETE FROM suppressions WHERE address = $1"
            " AND ($2::text IS NULL OR caller = $2) AND ($4 OR category = $3) RETURNING 1)"
            " SELECT count(*) FROM gone"
        )
        removed: int = await self._pool.run(
            lambda db: db.fetchval(sql, address.lower(), owner, category or "", every_category)
        )
        return removed

    async def suppressions(
        self,
        *,
        owner: str | None,
        address: str | None = None,
        reason: str | None = None,
        category: str | None = None,
        limit: int,
        after: tuple[str, str, str] | None = None,
    ) -> list[Suppression]:
        filters = [
            ("caller = {}", owner),
            ("address = {}", address.lower() if address is not None else None),
            ("reason = {}", reason),
            ("category = {}", category),
        ]
        where: list[str] = ["true"]
        params: list[object] = []
        for sql, value in filters:
            if value is not None:
                params.append(value)
                where.append(sql.format(f"${len(params)}"))
        if after is not None:
            params.extend(after)
            n = len(params)
            where.append(f"(address, caller, category) > (${n - 2}, ${n - 1}, ${n})")
        params.append(limit)
        sql = (
            f"SELECT {_COLUMNS} FROM suppressions WHERE {' AND '.join(where)}"
            f" ORDER BY address, caller, category LIMIT ${len(params)}"
        )
        rows = await self._pool.run(lambda db: db.fetch(sql, *params))
        return [_entry(row) for row in rows]

    async def has_suppressions(self, caller: str) -> bool:
        found = await self._pool.run(
            lambda db: db.fetchval("SELECT 1 FROM suppressions WHERE caller = $1 LIMIT 1", caller)
        )
        return found is not None

    async def suppressed_among(
        self, caller: str, addresses: Sequence[str], *, category: str | None
    ) -> dict[str, Suppression]:
        wanted = sorted({a.lower() for a in addresses})
        if not wanted:
            return {}
        sql = (
            f"SELECT {_COLUMNS} FROM suppressions WHERE address = ANY($1::text[])"
            " AND caller = $2 AND category IN ('', $3) ORDER BY category"
        )
        rows = await self._pool.run(lambda db: db.fetch(sql, wanted, caller, category or ""))
        # the entry for every category ('' sorts first) is the one shown
        found: dict[str, Suppression] = {}
        for row in rows:
            found.setdefault(row["address"], _entry(row))
        return found


async def lift_hard_bounces(db: Connection, caller: str, addresses: list[str]) -> None:
    """Take `addresses` off `caller`'s list where they are only for a hard bounce: a retry
    says the address is worth trying again (an unsubscribe or manual entry stays)."""
    if addresses:
        await db.execute(
            "DELETE FROM suppressions WHERE caller = $1 AND reason = 'hard_bounce'"
            " AND address = ANY($2::text[])",
            caller,
            [address.lower() for address in addresses],
        )


def _values(entry: Suppression) -> tuple[str, str, str, str, float]:
    return (
        entry.address.lower(),
        entry.caller,
        entry.category or "",
        entry.reason,
        entry.created_at or time.time(),
    )


def _entry(row: asyncpg.Record) -> Suppression:
    return Suppression(
        caller=row["caller"],
        address=row["address"],
        reason=row["reason"],
        category=row["category"] or None,
        created_at=row["created_at"],
    )
