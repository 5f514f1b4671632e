"""The application: wires settings, store, templates, mailer and delivery together.

Run it with `uvicorn app.main:app`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import api, health, template_api
from app.delivery import Delivery
from app.deps import Services
from app.errors import InvalidRequest, QueueFull, StoreUnavailable
from app.mailer import Mailer
from app.rendering import TemplateCatalog
from app.settings import Settings, load_settings
from app.store import Store
from app.worker import Worker

log = logging.getLogger("app")

DESCRIPTION = """
POST a notification; it is stored and answered with **202 Accepted** at once, then rendered from
its template and sent through SMTP in the background. Follow it with
`GET /v1/notifications/{id}`.
"""


def configure_logging(level: str) -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)


def stop_claiming_on_signals(worker: Worker) -> Callable[[], None]:
    """uvicorn lets open requests finish before the lifespan ends; without this the worker
    would keep starting new sends meanwhile. We chain onto the server's own handlers (and do
    nothing where there are none, as under a test runner). Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    chained: list[tuple[int, Callable[[int, FrameType | None], object]]] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(
            number: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] = previous,
        ) -> None:
            worker.stop_claiming()
            previous(number, frame)

        signal.signal(signum, handler)
        chained.append((signum, previous))

    def undo() -> None:
        for signum, previous in chained:
            signal.signal(signum, previous)

    return undo


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        catalog = TemplateCatalog(settings.templates_dir)
        store = Store(
            settings.database_path,
            synchronous=settings.sqlite_synchronous,
            busy_timeout=settings.database_busy_timeout,
        )
        mailer = Mailer(settings)
        delivery = Delivery(settings=settings, store=store, catalog=catalog, mailer=mailer)
        worker = Worker(settings=settings, store=store, delivery=delivery, mailer=mailer)
        worker.waiting = await store.count_waiting()
        app.state.services = Services(
            settings=settings, store=store, catalog=catalog, mailer=mailer, worker=worker
        )
        if not settings.api_keys:
            log.warning("auth.disabled API_KEYS is empty: anyone who reaches the API can send mail")
        log.info(
            "service.started templates=%d smtp=%s:%d security=%s",
            len(catalog.all()),
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
        )
        worker.start()
        undo_signals = stop_claiming_on_signals(worker)
        try:
            yield
        finally:
            undo_signals()
            await worker.stop()
            await mailer.close()
            store.close()
            log.info("service.stopped")

    app = FastAPI(
        title="Notifier",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(api.router)
    app.include_router(template_api.router)
    app.include_router(health.router)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse({"detail": [exc.detail()]}, status_code=422)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        log.warning("accept.backpressure %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("store.unavailable error=%s", exc)
        return JSONResponse(
            {"detail": "the database is busy; try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    return app


app = create_app()
