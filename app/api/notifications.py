"""The HTTP API for notifications: accept one, show, list, cancel (batches: app.api.batch)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response, status
from pydantic import AwareDatetime
from starlette.background import BackgroundTask

from app.api import actions, console_routes, replay, webhook_routes
from app.api import batch as batch_api
from app.api.acceptance import fingerprint, make_room, prepare
from app.api.callbacks import has_callback, settle_callback
from app.api.callers import Scope
from app.api.deps import (
    Canceller,
    Reader,
    Sender,
    Services,
    ServicesDep,
    authorized,
    charge,
)
from app.api.direct import served_by
from app.api.json_body import json_body
from app.api.listing import notification_filter
from app.api.ownership import listed_owner
from app.api.refusals import ADMISSION, BODY, SCOPED, STORE
from app.api.schemas import (
    Accepted,
    NotificationPage,
    NotificationRequest,
    NotificationView,
    Status,
)
from app.api.views import accepted_view, decode_cursor, encode_cursor, notification_view
from app.errors import IdempotencyConflict, InvalidRequest
from app.store.records import envelope_recipients

router = APIRouter(
    prefix="/v1/notifications",
    tags=["notifications"],
    responses={**ADMISSION, **SCOPED, **STORE},
)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such notification, or it is another caller's."}
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a request safely: the same key and body within IDEMPOTENCY_TTL"
        " return the first response and send nothing more.",
    ),
]


async def accept_notification(
    request: NotificationRequest,
    services: ServicesDep,
    caller: Sender,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Stored, then answered 202 with its `Location`; it is rendered and sent in the background."""
    # FastAPI documents this signature; `_accept_directly` reads the arguments (see app.api.direct).
    settings, worker = services.settings, services.worker
    new = prepare(request, settings=settings, catalog=services.catalog, caller=caller)
    if has_callback(request, caller):
        await settle_callback(
            request, caller=caller, settings=settings, resolver=services.webhook_resolver
        )
    await make_room(services.queue, 1, high_water=settings.queue_high_water)
    try:
        notification, replayed = await services.store.create(
            new,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint(request) if idempotency_key else "",
            idempotency_ttl=settings.idempotency_ttl,
        )
    except IdempotencyConflict as exc:
        raise InvalidRequest(("header", "Idempotency-Key"), str(exc)) from exc
    headers = {"Location": f"{router.prefix}/{notification.id}"}
    # told, not refused: the caller cannot know the list; delivery checks it again
    suppressed = (
        await services.store.suppressed_among(
            notification.caller, envelope_recipients(request), category=request.category
        )
        if await services.suppression_hint.may_have_entries(notification.caller)
        else {}
    )
    background = None
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        services.queue.added(1)
        services.metrics.accepted.labels(request.template, caller.name).inc()
        # else (DELIVERY=off) worker processes find it in the store
        if worker is not None and notification.status is Status.QUEUED:
            background = BackgroundTask(worker.deliver_now, notification.id)
    return Response(
        accepted_view(notification, suppressed=suppressed).model_dump_json(),
        status_code=status.HTTP_202_ACCEPTED,
        headers=headers,
        media_type="application/json",
        background=background,
    )


async def _accept_directly(http: Request) -> Response:
    """`accept_notification`'s arguments read by hand (see `app.api.direct`); the caller was
    authenticated before the body was read (`app.api.middleware.Admit`)."""
    services: Services = http.app.state.services
    caller = authorized(http, Scope.SEND)
    await charge(services, caller, 1)
    key = http.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidRequest(
            ("header", "Idempotency-Key"), "must be 1 to 255 characters", "string_length"
        )
    request = await json_body(http, NotificationRequest)
    return await accept_notification(request, services, caller, key)


def add_routes(app: FastAPI) -> None:
    """The accept route goes on the application's own router: matching it through an included
    router cost ~6% of the accept path (bench/). The others are included as usual."""
    app.router.add_api_route(
        router.prefix,
        accept_notification,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        responses={
            **ADMISSION,
            **SCOPED,
            **BODY,
            **STORE,
            202: {"description": "Stored; delivery runs in the background."},
        },
        tags=router.tags,
        route_class_override=served_by(_accept_directly),
    )
    # before the routes of one notification: `replay` is not an id
    app.include_router(replay.router)
    app.include_router(router)
    app.include_router(console_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(batch_api.router)


@router.get(
    "",
    response_model=NotificationPage,
    responses={403: {"description": "`caller` was given by a key without the admin scope."}},
)
async def list_notifications(
    services: ServicesDep,
    me: Reader,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    tag: str | None = None,
    template: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="Only this template's (the whole name)."),
    ] = None,
    recipient: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=320,
            description="Only mail to this address (to, cc or bcc; the whole address; ASCII"
            " letters in either case).",
        ),
    ] = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    caller: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            description="Only this caller's notifications (admin keys only).",
        ),
    ] = None,
) -> NotificationPage:
    """The caller's own notifications (an admin key's: every caller's), newest first. Follow
    `next_cursor` for the next page; it is null on the last one."""
    rows = await services.store.search(
        notification_filter(
            status=status_,
            tag=tag,
            template=template,
            recipient=recipient,
            created_after=created_after,
            created_before=created_before,
        ),
        owner=listed_owner(me, caller),
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )
    return NotificationPage(
        items=[notification_view(n) for n in rows],
        next_cursor=encode_cursor(rows[-1]) if len(rows) == limit else None,
    )


@router.get(
    "/{notification_id}",
    response_model=NotificationView,
    response_model_by_alias=True,
    responses=_NOT_FOUND,
)
async def show_notification(
    notification_id: str, services: ServicesDep, me: Reader
) -> NotificationView:
    return notification_view(await actions.owned(services, notification_id, caller=me))


@router.post(
    "/{notification_id}/cancel",
    response_model=NotificationView,
    responses={
        **_NOT_FOUND,
        409: {"description": "Only scheduled, queued or deferred notifications can be cancelled."},
    },
)
async def cancel_notification(
    notification_id: str, services: ServicesDep, me: Canceller
) -> NotificationView:
    return notification_view(await actions.cancel(services, notification_id, caller=me))
