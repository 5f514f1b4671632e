"""The application: wires settings, store, templates, delivery and metrics together.

Run it with `uvicorn app.main:app` (or `notifier serve`); `app` is built from the settings when
uvicorn asks for it, so importing this module reads no settings. With DELIVERY=off it only
accepts and stores: `notifier worker` processes deliver.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import cache

from fastapi import FastAPI

from app.api import health, notifications, suppressions, unsubscribe_routes
from app.api import templates as template_api
from app.api.auth_throttle import AuthThrottle
from app.api.deps import Services
from app.api.docs import add_docs
from app.api.http_errors import install_error_handlers
from app.api.keyring import Keyring
from app.api.middleware import Admit, ObserveRequests
from app.api.queue_depth import QueueDepth
from app.api.rate_limit import RateLimiter
from app.api.suppression_hint import SuppressionHint
from app.console.routes import add_console
from app.delivery.assembly import Delivering, delivering
from app.delivery.compose import log_if_no_unsubscribe_links
from app.delivery.signals import stop_claiming_on_signals
from app.ops.logs import configure_logging, event
from app.ops.metrics import Metrics
from app.rendering.catalog import TemplateCatalog
from app.settings import Settings, load_settings
from app.store.opening import open_store
from app.store.protocol import NotificationStore
from app.store.url import parse_database_url
from app.webhooks.resolver import WebhookResolver

log = logging.getLogger("app")

DESCRIPTION = """
POST a notification; it is stored and answered with **202 Accepted** at once, then rendered from
its template and sent through SMTP in the background. Follow it with
`GET /v1/notifications/{id}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
        keyring = Keyring(settings)  # a keys file changed since the settings were read: stop
        catalog = TemplateCatalog(settings.templates_dir)
        store = await open_store(settings)
        limiter = _limiter(settings)
        auth_throttle = AuthThrottle.from_settings(
            settings.auth_failure_limit,
            storage=settings.rate_limit_storage,
            key_prefix=settings.rate_limit_key_prefix,
            metrics=metrics,
        )
        resolver = WebhookResolver()  # one per process: accepting and delivering share it
        try:
            hint = SuppressionHint(store.has_suppressions)
            async with _delivery(
                settings=settings,
                store=store,
                catalog=catalog,
                metrics=metrics,
                keyring=keyring,
                hint=hint,
                resolver=resolver,
            ) as running:
                worker = running.worker if running else None
                app.state.services = Services(
                    settings=settings,
                    store=store,
                    catalog=catalog,
                    mailer=running.mailer if running else None,
                    worker=worker,
                    metrics=metrics,
                    limiter=limiter,
                    queue=QueueDepth(store.count_waiting),
                    keys=keyring,
                    auth_throttle=auth_throttle,
                    suppression_hint=hint,
                    webhook_resolver=resolver,
                )
                _log_start(settings, catalog, keyring)
                undo_signals = stop_claiming_on_signals(worker) if worker else lambda: None
                try:
                    async with keyring.watching():
                        yield
                finally:
                    undo_signals()
        finally:
            await limiter.close()
            await auth_throttle.close()
            await store.close()
            event(log, "service.stopped")

    app = FastAPI(
        title="Notifier",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # /metrics is ours (prometheus); FastAPI's OpenTelemetry hooks would only cost a
        # lookup of the global providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # served by add_docs with their assets, not from a CDN
        docs_url=None,
        redoc_url=None,
    )
    add_docs(app)
    notifications.add_routes(app)
    app.include_router(template_api.router)
    app.include_router(health.router)
    app.include_router(suppressions.router)
    app.include_router(unsubscribe_routes.router)
    add_console(app, settings)
    install_error_handlers(app)
    # outermost last: the request id covers everything, metrics see the 401s and 413s too
    app.add_middleware(Admit, limit=settings.max_body_bytes)
    app.add_middleware(ObserveRequests, metrics=metrics)
    return app


def _limiter(settings: Settings) -> RateLimiter:
    # even with RATE_LIMIT=off: a key may have a rate_limit of its own
    return RateLimiter(
        storage=settings.rate_limit_storage,
        key_prefix=settings.rate_limit_key_prefix,
    )


def _delivery(
    *,
    settings: Settings,
    store: NotificationStore,
    catalog: TemplateCatalog,
    metrics: Metrics,
    keyring: Keyring,
    hint: SuppressionHint,
    resolver: WebhookResolver,
) -> AbstractAsyncContextManager[Delivering | None]:
    """This process's delivery: embedded, or none with DELIVERY=off (worker processes send)."""
    if settings.delivery == "off":
        return nullcontext(None)
    return delivering(
        settings=settings,
        store=store,
        catalog=catalog,
        metrics=metrics,
        webhook_secrets=keyring.webhook_secrets,
        suppressed=hint.added,  # a hard bounce shows in the next 202 at once
        webhook_resolver=resolver,
    )


def _log_start(settings: Settings, catalog: TemplateCatalog, keyring: Keyring) -> None:
    if settings.auth == "off":
        event(
            log,
            "auth.disabled",
            level=logging.WARNING,
            hint="AUTH=off: anyone who reaches the API can send mail",
        )
    log_if_no_unsubscribe_links(settings, log)
    event(
        log,
        "service.started",
        templates=len(catalog.all()),
        database=parse_database_url(settings.database_url).backend,
        smtp=f"{settings.smtp_host}:{settings.smtp_port}",
        security=settings.smtp_security.value,
        callers=",".join(sorted({key.name for key in keyring.keys})) or None,
        delivery=settings.delivery,
    )


@cache
def _app_from_settings() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` for uvicorn, built on first use: tests and tools import this module
    # without the service's settings (a missing AUTH choice would stop them at import)
    if name == "app":
        return _app_from_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
