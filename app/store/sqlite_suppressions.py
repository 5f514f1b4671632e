"""The suppression list on the SQLite file: the part of `SqliteStore` that keeps it.

A category of None is stored as '' (a key column cannot be NULL): an entry in every category.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from app.store.records import Suppression
from app.store.sqlite_writer import Database

_COLUMNS = "address, caller, category, reason, created_at"
_INSERT = f"INSERT INTO suppressions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"


class SqliteSuppressions:
    _db: Database
    _reads: Database

    async def suppress(self, entries: Sequence[Suppression]) -> None:
        """Add each entry; one already there keeps its reason and time."""
        rows = [_values(e) for e in entries]
        if rows:
            await self._db.write(
                lambda db: db.executemany(f"{_INSERT} ON CONFLICT DO NOTHING", rows)
            )

    async def put_suppression(self, entry: Suppression) -> bool:
        """Add one entry, or give the one there this reason; True if it is new."""

        def put(db: sqlite3.Connection) -> bool:
            key = _values(entry)[:3]
            known = db.execute(
                "SELECT 1 FROM suppressions WHERE address = ? AND caller = ? AND category = ?", key
            ).fetchone()
            db.execute(
                f"{_INSERT} ON CONFLICT DO UPDATE SET reason = excluded.reason", _values(entry)
            )
            return known is None

        return await self._db.write(put)

    async def unsuppress(
        self, address: str, *, owner: str | None, category: str | None, every_category: bool
    ) -> int:
        """Remove `address` from `owner`'s list (None: every caller's), in `category` (None:
        the entry for every category), or in all its entries with `every_category`."""
        where, params = ["address = ?"], [address.lower()]
        if owner is not None:
            where.append("caller = ?")
            params.append(owner)
        if not every_category:
            where.append("category = ?")
            params.append(category or "")
        sql = f"DELETE FROM suppressions WHERE {' AND '.join(where)}"
        removed: int = await self._db.write(lambda db: db.execute(sql, params).rowcount)
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
            ("caller = ?", owner),
            ("address = ?", address.lower() if address is not None else None),
            ("reason = ?", reason),
            ("category = ?", category),
        ]
        where = ["1 = 1", *(sql for sql, value in filters if value is not None)]
        params: list[object] = [value for _, value in filters if value is not None]
        if after is not None:
            where.append("(address, caller, category) > (?, ?, ?)")
            params.extend(after)
        sql = (
            f"SELECT {_COLUMNS} FROM suppressions WHERE {' AND '.join(where)}"
            " ORDER BY address, caller, category LIMIT ?"
        )
        rows = await self._reads.read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [_entry(row) for row in rows]

    async def has_suppressions(self, caller: str) -> bool:
        found = await self._reads.read(
            lambda db: db.execute(
                "SELECT 1 FROM suppressions WHERE caller = ? LIMIT 1", (caller,)
            ).fetchone()
        )
        return found is not None

    async def suppressed_among(
        self, caller: str, addresses: Sequence[str], *, category: str | None
    ) -> dict[str, Suppression]:
        wanted = sorted({a.lower() for a in addresses})
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        sql = (
            f"SELECT {_COLUMNS} FROM suppressions WHERE address IN ({marks}) AND caller = ?"
            " AND category IN ('', ?) ORDER BY category"
        )
        params = [*wanted, caller, category or ""]
        rows = await self._reads.read(lambda db: db.execute(sql, params).fetchall())
        # the entry for every category ('' sorts first) is the one shown
        found: dict[str, Suppression] = {}
        for row in rows:
            found.setdefault(row["address"], _entry(row))
        return found


def lift_hard_bounces(db: sqlite3.Connection, caller: str, addresses: list[str]) -> None:
    """Take `addresses` off `caller`'s list where they are only for a hard bounce: a retry
    says the address is worth trying again (an unsubscribe or manual entry stays)."""
    db.executemany(
        "DELETE FROM suppressions WHERE caller = ? AND address = ? AND reason = 'hard_bounce'",
        [(caller, address.lower()) for address in addresses],
    )


def _values(entry: Suppression) -> tuple[str, str, str, str, float]:
    return (
        entry.address.lower(),
        entry.caller,
        entry.category or "",
        entry.reason,
        entry.created_at or time.time(),
    )


def _entry(row: sqlite3.Row) -> Suppression:
    return Suppression(
        caller=row["caller"],
        address=row["address"],
        reason=row["reason"],
        category=row["category"] or None,
        created_at=row["created_at"],
    )
