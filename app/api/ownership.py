"""Whose notifications a caller sees and acts on: its own; an admin key's, everyone's.

Another caller's notification does not exist for a caller: GET and cancel answer 404 with the
body of an unknown id, so that an id never tells whether someone else's mail is behind it.
"""

from __future__ import annotations

from fastapi import HTTPException, status

from app.api.callers import Caller, Scope


def owner(caller: Caller) -> str | None:
    """The store's `owner` for what `caller` asks: its own name, or None (everyone) for admin."""
    return None if caller.admin else caller.name


def listed_owner(caller: Caller, asked: str | None) -> str | None:
    """Whose notifications a list shows: the caller's own, unless an admin asks for one
    caller's (`?caller=`). Only admin keys may name a caller: 403 naming the scope."""
    if asked is None:
        return owner(caller)
    if not caller.admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"filtering by caller needs a key with the {Scope.ADMIN.value!r} scope;"
            " without it the list shows this key's own notifications",
        )
    return asked


def check_acted(notification_id: str, acted: bool, current: str | None, *, only: str) -> None:
    """After a store action that applies to some statuses only: 404 for an unknown id (or
    another caller's: `current` is None for both), 409 naming the status it was in if the
    action did not apply; `only` says which it applies to."""
    if current is None:
        raise not_found(notification_id)
    if not acted:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"notification {notification_id} is {current}; only {only}"
        )


def not_found(notification_id: str) -> HTTPException:
    """The one answer for an unknown id and for another caller's."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no notification with id {notification_id!r}")
