"""The worker process (`notifier worker`): delivery without the HTTP API.

It opens the store as the API does (migrating it first), delivers exactly as an API process
with DELIVERY=embedded does (`assembly.delivering`), and stops on SIGTERM or SIGINT: no new
attempts from that moment, attempts in flight get SHUTDOWN_GRACE_SECONDS to finish, the rest
are given back to the store for the next worker. With DELIVERY=off API processes in front, it
finds new work by polling every POLL_INTERVAL (or at once when the store announces it).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from app.api.keyring import Keyring
from app.delivery.assembly import delivering
from app.delivery.compose import log_if_no_unsubscribe_links
from app.ops.logs import configure_logging, event
from app.ops.metrics import Metrics
from app.rendering.catalog import TemplateCatalog
from app.settings import Settings
from app.store.opening import open_store
from app.webhooks.resolver import WebhookResolver

log = logging.getLogger("app.delivery.process")


async def run_worker(settings: Settings) -> None:
    """Deliver until SIGTERM or SIGINT, then shut down cleanly."""
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    catalog = TemplateCatalog(settings.templates_dir)
    # the keys, for the webhook secrets they carry: read again as the API reads them
    keyring = Keyring(settings)
    store = await open_store(settings)
    try:
        # Metrics count in this process only: a worker serves no /metrics (its outcomes are
        # in the store, which every API's /metrics reads).
        async with (
            keyring.watching(),
            delivering(
                settings=settings,
                store=store,
                catalog=catalog,
                metrics=Metrics(),
                webhook_secrets=keyring.webhook_secrets,
                webhook_resolver=WebhookResolver(),
            ) as running,
        ):

            def on_signal(number: signal.Signals) -> None:
                running.worker.stop_claiming()  # not one more attempt, from this moment
                if not stop.is_set():
                    event(
                        log,
                        "worker.stopping",
                        signal=number.name,
                        grace_seconds=settings.shutdown_grace_seconds,
                    )
                stop.set()

            for number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(number, on_signal, number)
            log_if_no_unsubscribe_links(settings, log)
            event(
                log,
                "worker.started",
                worker=running.name,
                templates=len(catalog.all()),
                smtp=f"{settings.smtp_host}:{settings.smtp_port}",
                concurrency=settings.delivery_concurrency,
            )
            await stop.wait()
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)
        await store.close()
        event(log, "worker.stopped")
