"""Delivery as one piece, built from the settings and the store: the mailer, the attempt and
the worker, started with a heartbeat and the webhook dispatcher, and stopped in order. The API
process (DELIVERY=embedded) and the worker process (`notifier worker`) both take it from here,
so they deliver alike (mail and webhook events)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.delivery.attempt import Delivery
from app.delivery.heartbeat import Heartbeat, beat_interval, worker_name
from app.delivery.mailer import Mailer
from app.delivery.worker import Worker
from app.ops.metrics import Metrics
from app.rendering.catalog import TemplateCatalog
from app.settings import Settings
from app.store.protocol import NotificationStore
from app.webhooks.dispatcher import Dispatcher, SecretsOf
from app.webhooks.resolver import WebhookResolver
from app.webhooks.sender import WebhookSender
from app.webhooks.targets import AllowList


@dataclass(frozen=True)
class Delivering:
    mailer: Mailer
    worker: Worker
    name: str  # the worker's name in the heartbeats


@asynccontextmanager
async def delivering(
    *,
    settings: Settings,
    store: NotificationStore,
    catalog: TemplateCatalog,
    metrics: Metrics,
    webhook_secrets: SecretsOf,
    suppressed: Callable[[str], None] = lambda caller: None,
    webhook_resolver: WebhookResolver,
) -> AsyncIterator[Delivering]:
    """Deliver (mail and webhook events) until the block ends; then take no new work, let
    attempts in flight finish within SHUTDOWN_GRACE_SECONDS (the rest are given back) and
    close the SMTP and HTTP connections. `webhook_secrets`: a caller's webhook secrets;
    `suppressed`: told of a caller whose suppression list a hard bounce just grew;
    `webhook_resolver`: where callback hosts are looked up (the process's one)."""
    mailer = Mailer(settings)
    sender = WebhookSender(allow=AllowList(settings.webhook_allow_hosts), resolver=webhook_resolver)
    dispatcher = Dispatcher(
        settings=settings, store=store, sender=sender, secrets_of=webhook_secrets
    )
    delivery = Delivery(
        settings=settings,
        store=store,
        catalog=catalog,
        mailer=mailer,
        metrics=metrics,
        recorded=dispatcher.wake,
        suppressed=suppressed,
    )
    worker = Worker(settings=settings, store=store, delivery=delivery, mailer=mailer)
    store.listen(worker.wake)  # work stored by other processes (PostgreSQL's NOTIFY)
    heartbeat = Heartbeat(store=store, name=worker_name(), every=beat_interval(settings))
    worker.start()
    heartbeat.start()
    dispatcher.start()
    try:
        yield Delivering(mailer=mailer, worker=worker, name=heartbeat.name)
    finally:
        await worker.stop()
        await dispatcher.stop()  # after the worker: its last attempts may owe events
        await heartbeat.stop()  # after the grace period: the worker lived until then
        await mailer.close()
        await sender.close()
