"""Records for store tests, made without the API."""

from __future__ import annotations

import time
from typing import Any

from app.api.schemas import NotificationRequest, Status
from app.ids import new_token, new_uuid
from app.store.records import NewNotification
from tests.conftest import WELCOME


def new(
    *,
    caller: str = "alice",
    status: Status = Status.QUEUED,
    due_in: float = 0.0,
    created_at: float | None = None,
    **request: Any,
) -> NewNotification:
    """A notification to store: WELCOME with `request` fields changed, due `due_in` seconds
    after `created_at` (default now)."""
    now = time.time() if created_at is None else created_at
    return NewNotification(
        id=new_uuid(),
        request=NotificationRequest.model_validate({**WELCOME, **request}),
        caller=caller,
        message_id=f"<{new_token()}@example.com>",
        status=status,
        created_at=now,
        due_at=now + due_in,
        request_id="req-1",
    )
