"""The HTTP API for batches: many notifications in one request, each accepted or refused alone."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.api.acceptance import make_room, prepare
from app.api.callbacks import BatchCallbacks, has_callback
from app.api.callers import Caller, Scope
from app.api.deps import Sender, Services, ServicesDep, authorized, charge, rate_limit_of
from app.api.direct import served_by
from app.api.http_errors import ITEM_ERRORS, public_errors
from app.api.json_body import json_bytes, parse_body
from app.api.refusals import ADMISSION, BODY, SCOPED, STORE
from app.api.schemas import BatchAccepted, BatchItem, BatchRequest, NotificationRequest
from app.errors import InvalidRequest
from app.store.records import NewNotification

router = APIRouter(
    prefix="/v1/notifications",
    tags=["notifications"],
    responses={**ADMISSION, **SCOPED, **STORE},
)


async def accept_batch(batch: BatchRequest, services: ServicesDep, caller: Sender) -> Response:
    """Up to MAX_BATCH (500) notifications, each validated on its own: the valid ones are
    stored in one transaction and accepted, the others are reported by index. 422 if none is
    valid, or if the batch is larger than the caller's whole RATE_LIMIT. Costs one unit of
    RATE_LIMIT per notification."""
    # FastAPI documents this signature; `_accept_batch_directly` serves it (see app.api.direct).
    return await _accept(batch, {}, services=services, caller=caller)


async def _accept_batch_directly(http: Request) -> Response:
    """`accept_batch`'s arguments read by hand: an item holding what no mail can carry (see
    app.api.json_body) is refused by index like any other invalid item. The cost is known once the
    body is read; a batch refused as a whole costs one unit, like any other request, so that
    a retry of the same request costs what Retry-After was computed for."""
    services: Services = http.app.state.services
    caller = authorized(http, Scope.SEND)
    try:
        batch, flawed = parse_body(await json_bytes(http), BatchRequest, items="notifications")
        _check_size(len(batch.notifications), services, caller)
    except (RequestValidationError, InvalidRequest):
        await charge(services, caller, 1)
        raise
    await charge(services, caller, len(batch.notifications))
    return await _accept(batch, flawed, services=services, caller=caller)


router.add_api_route(
    "/batch",
    accept_batch,
    methods=["POST"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    responses=BODY,
    route_class_override=served_by(_accept_batch_directly),
)


def _check_size(count: int, services: Services, caller: Caller) -> None:
    settings, limit = services.settings, rate_limit_of(services, caller)
    if count > settings.max_batch:
        raise InvalidRequest(
            ("body", "notifications"),
            f"{count} notifications; MAX_BATCH allows {settings.max_batch}",
        )
    if limit is not None and count > limit.count:
        # it could never pass: refuse it for what it is rather than 429 it for ever
        which = "the key's rate_limit" if caller.rate_limit else "RATE_LIMIT"
        raise InvalidRequest(
            ("body", "notifications"),
            f"{count} notifications; {which} ({limit}) lets {caller.name!r} send at most"
            f" {limit.count} at once: split the batch",
        )


async def _accept(
    batch: BatchRequest,
    flawed: dict[int, list[dict[str, Any]]],
    *,
    services: Services,
    caller: Caller,
) -> Response:
    settings = services.settings
    items: list[BatchItem] = []
    accepted: list[NewNotification] = []
    callbacks = BatchCallbacks(caller=caller, settings=settings, resolver=services.webhook_resolver)
    for index, raw in enumerate(batch.notifications):
        if index in flawed:
            items.append(BatchItem(index=index, error=public_errors(flawed[index], ITEM_ERRORS)))
            continue
        try:
            request = NotificationRequest.model_validate(raw)
            new = prepare(request, settings=settings, catalog=services.catalog, caller=caller)
            if has_callback(request, caller):
                await callbacks.settle(request)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            items.append(BatchItem(index=index, error=public_errors(errors, ITEM_ERRORS)))
        except InvalidRequest as exc:
            error = exc.detail()
            error["loc"] = list(exc.loc[1:])  # relative to the item, like pydantic's
            items.append(BatchItem(index=index, error=public_errors([error], ITEM_ERRORS)))
        else:
            accepted.append(new)
            items.append(BatchItem(index=index, id=new.id, status=new.status))
    if not accepted:
        # one answer's errors, capped like any other: 500 items of 3 errors each would be ~600 KB
        detail = public_errors(
            [
                {**e, "loc": ["body", "notifications", i.index, *e["loc"]]}
                for i in items
                for e in i.error or []
            ]
        )
        return JSONResponse({"detail": detail}, status_code=422)
    worker = services.worker
    await make_room(services.queue, len(accepted), high_water=settings.queue_high_water)
    await services.store.create_many(accepted)
    services.queue.added(len(accepted))
    for new in accepted:
        services.metrics.accepted.labels(new.request.template, caller.name).inc()
    if worker is not None:  # else (DELIVERY=off) worker processes find them in the store
        worker.wake()  # the worker sends them with bounded concurrency
    body = BatchAccepted(accepted=len(accepted), refused=len(items) - len(accepted), items=items)
    return Response(body.model_dump_json(), status_code=202, media_type="application/json")
