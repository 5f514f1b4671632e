"""Is a worker alive? What `notifier health` answers, read from the heartbeats in the store.

A worker beats every few seconds (`app.delivery.heartbeat`); one whose last beat is older than
three beats is dead, stuck, or cut off from the database. By default only the workers on this
machine count: a container's healthcheck runs inside the container, whose host name is its own,
so each worker container is judged by its own worker, not by any replica's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class HeartbeatReader(Protocol):
    async def last_heartbeat(self, *, host: str | None = None) -> float | None: ...


@dataclass(frozen=True)
class Verdict:
    fresh: bool
    message: str


async def judge_workers(
    store: HeartbeatReader, *, host: str | None, max_age: float, now: float | None = None
) -> Verdict:
    """Fresh when a worker (on `host`, or anywhere when None) beat within `max_age` seconds."""
    where = f"on {host}" if host is not None else "anywhere"
    beat_at = await store.last_heartbeat(host=host)
    if beat_at is None:
        return Verdict(
            False,
            f"no worker {where} has a heartbeat in the database: start one with"
            " `notifier worker` (API processes with DELIVERY=embedded beat too)",
        )
    age = (time.time() if now is None else now) - beat_at
    if age > max_age:
        return Verdict(
            False,
            f"the last heartbeat of a worker {where} is {age:.1f} s old (fresh means under"
            f" {max_age:g} s): it stopped, hangs, or cannot write to the database",
        )
    return Verdict(True, f"ok: a worker {where} beat {max(age, 0.0):.1f} s ago")
