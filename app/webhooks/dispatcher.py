"""The webhook dispatcher: claims due events from the outbox and delivers them, with retries.

It runs wherever delivery runs (an API process with DELIVERY=embedded, every `notifier worker`)
and looks for due events every POLL_INTERVAL, or at once when an attempt was just recorded.
Delivery is at least once: an event is claimed under a lease (so several processes never send it
at the same time), POSTed, and only then marked delivered; a process that dies in between leaves
the lease to expire and the event to be sent again, with the same id. A failed POST is tried
again after WEBHOOK_RETRY_BASE_SECONDS, doubling with jitter up to WEBHOOK_RETRY_MAX_SECONDS,
until WEBHOOK_MAX_AGE after the event was written; then it is given up (`failed`) and the
notification's next event, if any, goes out.

One caller's events take at most PER_CALLER of the CONCURRENCY POSTs in flight: a caller whose
receiver hangs (5 s a POST) cannot fill them all, and the others' due events are claimed past
its backlog (the store ranks due events per caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from app.delivery.attempt import retry_delay
from app.errors import StoreUnavailable
from app.ops.logs import event as log_event
from app.settings import Settings
from app.store.protocol import NotificationStore
from app.webhooks.events import EventAttempt, EventStatus, WebhookEvent
from app.webhooks.sender import TIMEOUT_SECONDS, WebhookSender

log = logging.getLogger("app.webhooks")

# events POSTed at once by one process, and of those at most this many of one caller's
CONCURRENCY = 16
PER_CALLER = 4
# longer than a POST can take (resolution and the 5 s exchange), so no two processes send
# one event at once
LEASE_SECONDS = 6 * TIMEOUT_SECONDS

SecretsOf = Callable[[str], tuple[str, ...]]


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        store: NotificationStore,
        sender: WebhookSender,
        secrets_of: SecretsOf,
    ) -> None:
        self._settings = settings
        self._store = store
        self._sender = sender
        self._secrets_of = secrets_of
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: Counter[str] = Counter()  # POSTs under way, by caller
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        """An event may have been written: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Claim nothing more; POSTs in flight get SHUTDOWN_GRACE_SECONDS, then are cut (their
        events are sent again once the lease expires)."""
        self._stopping = True
        self._wake.set()
        if self._loop is not None:
            await self._loop
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self._settings.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._claim()
            except StoreUnavailable:
                pass  # the delivery worker says so in the log; the next poll tries again
            except Exception:
                log.exception("webhook.dispatcher_error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)

    async def _claim(self) -> None:
        # again while a claim brings something: callers whose share it filled are left out of
        # the next one, whose room goes to the others
        while not self._stopping and (free := CONCURRENCY - len(self._tasks)) > 0:
            claimed = await self._store.claim_events(
                limit=free,
                lease_seconds=LEASE_SECONDS,
                per_caller=PER_CALLER,
                in_flight=+self._in_flight,
            )
            for event in claimed:
                self._start(event)
            if not claimed:
                return

    def _start(self, event: WebhookEvent) -> None:
        self._in_flight[event.caller] += 1
        task = asyncio.create_task(self._deliver(event))
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._in_flight[event.caller] -= 1
            if self._in_flight[event.caller] == PER_CALLER - 1:
                self._wake.set()  # the caller had its fill: its next due event may go now

        task.add_done_callback(done)

    async def _deliver(self, event: WebhookEvent) -> None:
        try:
            secrets = self._secrets_of(event.caller)
            if secrets:
                attempt = await self._sender.post(event, secrets)
            else:
                attempt = EventAttempt(
                    at=time.time(),
                    status_code=None,
                    error="no secret to sign with: set the key's webhook_secret or WEBHOOK_SECRET",
                    duration_ms=0.0,
                )
            await self._record(event, attempt)
        except Exception:
            # the lease keeps the event; it is tried again once it expires
            log.exception("webhook.delivery_crashed", extra={"fields": {"id": event.id}})

    async def _record(self, event: WebhookEvent, attempt: EventAttempt) -> None:
        settings = self._settings
        next_attempt_at = None
        if attempt.error is None:
            status = EventStatus.DELIVERED
        elif time.time() - event.created_at >= settings.webhook_max_age:
            status = EventStatus.FAILED
        else:
            status = EventStatus.PENDING
            next_attempt_at = time.time() + retry_delay(
                event.attempt_count + 1,
                base=settings.webhook_retry_base_seconds,
                cap=settings.webhook_retry_max_seconds,
            )
        recorded = await self._store.finish_event(
            event, status=status, attempt=attempt, next_attempt_at=next_attempt_at
        )
        name = {
            EventStatus.DELIVERED: "webhook.delivered",
            EventStatus.PENDING: "webhook.retry",
            EventStatus.FAILED: "webhook.given_up",
        }[status]
        log_event(
            log,
            name if recorded else "webhook.lease_lost",
            level=logging.INFO if status is EventStatus.DELIVERED else logging.WARNING,
            id=event.id,
            notification=event.notification_id,
            type=event.type,
            attempt=event.attempt_count + 1,
            code=attempt.status_code,
            error=attempt.error,
            ms=round(attempt.duration_ms, 1),
            retry_at=round(next_attempt_at, 3) if next_attempt_at else None,
        )
        if recorded and status is not EventStatus.PENDING:
            self._wake.set()  # the notification's next event may go now
