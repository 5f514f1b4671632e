"""Bulk replay: queue the failed notifications that match a filter again, as a retry of each
(a new attempt budget, the same Message-ID), a bounded number per call, resumable."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Sender, ServicesDep
from app.api.ownership import owner
from app.api.refusals import ADMISSION, BODY, SCOPED, STORE
from app.api.replay_schemas import ReplayRequest, ReplayResult
from app.api.schemas import Status
from app.api.views import decode_cursor, encode_cursor
from app.errors import InvalidRequest
from app.store.records import NotificationFilter

router = APIRouter(
    prefix="/v1/notifications",
    tags=["notifications"],
    responses={**ADMISSION, **SCOPED, **BODY, **STORE},
)


@router.post("/replay", response_model=ReplayResult)
async def replay(body: ReplayRequest, services: ServicesDep, me: Sender) -> ReplayResult:
    """Queue again up to `limit` of the caller's failed notifications (an admin key's: every
    caller's) that match `filter`, newest first. While `next_cursor` is not null, more may
    match: call again with it. A `dry_run` lists what would be queued and changes nothing."""
    try:
        after = decode_cursor(body.cursor) if body.cursor else None
    except InvalidRequest as exc:
        raise InvalidRequest(("body", "cursor"), exc.msg) from None
    f = body.filter
    found = await services.store.search(
        NotificationFilter(
            status=Status.FAILED,
            tag=f.tag,
            created_after=NotificationFilter.epoch(f.created_after),
            created_before=NotificationFilter.epoch(f.created_before),
            template=f.template,
            error_contains=f.error_contains,
        ),
        owner=owner(me),
        limit=body.limit,
        after=after,
    )
    ids = []
    for notification in found:
        if body.dry_run:
            ids.append(notification.id)
            continue
        # one at a time, as the retry route does: of concurrent replays each row applies once
        retried, _ = await services.store.retry(notification.id, owner=owner(me))
        if retried:
            ids.append(notification.id)
    if ids and not body.dry_run:
        services.queue.added(len(ids))
        if services.worker is not None:  # else worker processes are woken by the store's notice
            services.worker.wake()
    return ReplayResult(
        count=len(ids),
        ids=ids,
        next_cursor=encode_cursor(found[-1]) if len(found) == body.limit else None,
        dry_run=body.dry_run,
    )
