"""A request's callback_url, settled at accept time: the request's own or its key's default,
and only if it may be called (app.webhooks.targets: https, public addresses, or
WEBHOOK_ALLOW_HOSTS) and there is a secret to sign its webhooks with. A refusal is a 422 naming
`callback_url`. Requests without one (and without a key default) never get here: the accept
path pays nothing for webhooks it does not use."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

from app.api.callers import Caller
from app.api.schemas import NotificationRequest
from app.errors import InvalidRequest
from app.settings import Settings
from app.webhooks.resolver import WebhookResolver
from app.webhooks.targets import (
    RESOLVE_SECONDS,
    AllowList,
    RefusedTarget,
    checked_address,
    parse_target,
)

_LOC = ("body", "callback_url")
BATCH_LOOKUP_SECONDS = 5  # what one batch may spend checking callback hosts


def has_callback(request: NotificationRequest, caller: Caller) -> bool:
    return request.callback_url is not None or caller.callback_url is not None


async def settle_callback(
    request: NotificationRequest,
    *,
    caller: Caller,
    settings: Settings,
    resolver: WebhookResolver,
    within: float = RESOLVE_SECONDS,
) -> None:
    """Set the request's callback_url to what its webhooks will call, checked (its host looked
    up on the caller's share of `resolver`); InvalidRequest naming callback_url if it may not
    be called."""
    url = request.callback_url or caller.callback_url
    if url is None:
        return
    whose = "" if request.callback_url else "the key's default "
    if not (caller.webhook_secrets or settings.webhook_secrets):
        raise InvalidRequest(
            _LOC,
            f"{whose}callback_url needs a secret to sign webhooks with: set WEBHOOK_SECRET, or"
            " webhook_secret for the key in the keys file",
        )
    try:
        target = parse_target(url)
        if not _allow_list(tuple(settings.webhook_allow_hosts)).allows(target):
            await checked_address(target, resolver=resolver, caller=caller.name, within=within)
    except RefusedTarget as exc:
        raise InvalidRequest(_LOC, f"{whose}callback_url {exc}") from None
    request.callback_url = url  # stored: what was accepted is what is called


class BatchCallbacks:
    """The callback_urls of one batch, settled as `settle_callback` does, each URL checked once,
    and all of them within BATCH_LOOKUP_SECONDS: past it, an item whose URL is not checked yet
    is refused (send it again) rather than the request lasting 2 s per unresolvable host."""

    def __init__(
        self,
        *,
        caller: Caller,
        settings: Settings,
        resolver: WebhookResolver,
        budget: float = BATCH_LOOKUP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._caller = caller
        self._budget = budget
        self._clock = clock
        self._settings = settings
        self._resolver = resolver
        self._settled: dict[str | None, InvalidRequest | None] = {}
        self._started = clock()

    async def settle(self, request: NotificationRequest) -> None:
        url = request.callback_url or self._caller.callback_url
        if url in self._settled:
            refusal = self._settled[url]
            if refusal is not None:  # a new one: the same exception raised again would grow
                raise InvalidRequest(refusal.loc, refusal.msg, refusal.kind)
            request.callback_url = url
            return
        left = self._budget - (self._clock() - self._started)
        if left <= 0:
            raise InvalidRequest(
                _LOC,
                f"callback_url not checked: this batch's callback lookups took over"
                f" {self._budget:g} s; send this notification again",
            )
        try:
            await settle_callback(
                request,
                caller=self._caller,
                settings=self._settings,
                resolver=self._resolver,
                within=min(RESOLVE_SECONDS, left),
            )
        except InvalidRequest as exc:
            self._settled[url] = exc
            raise
        self._settled[url] = None


@cache
def _allow_list(entries: tuple[str, ...]) -> AllowList:
    return AllowList(entries)
