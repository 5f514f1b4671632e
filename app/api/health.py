"""Liveness and readiness probes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServicesDep
from app.errors import NotifierError
from app.ops.smtp_report import smtp_report

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "The database is not usable; see body."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Can the service accept notifications? 200 while the database is usable, even when the
    SMTP server is away or delivery waits for a fix of the SMTP settings: accepting then is
    exactly what the service promises. The body says how the SMTP server and delivery fare,
    from what the worker already knows; it never opens a connection of its own."""
    try:
        await services.store.ping()
        database = "ok"
    except NotifierError as exc:
        database = str(exc)
    except Exception as exc:  # a corrupted file, say: this instance cannot accept either
        database = f"database unusable: {exc}"
    if services.worker is not None:
        services.worker.refresh_smtp_state()
    smtp = smtp_report(services.worker, services.mailer)
    checks = {"database": database, "smtp": smtp.smtp, "delivery": smtp.delivery}
    status = "not ready" if database != "ok" else "ready" if smtp.healthy else "degraded"
    last = smtp.last_contact
    return JSONResponse(
        {
            "status": status,
            "checks": checks,
            "smtp_last_contact": None if last is None else _rfc3339(last),
        },
        status_code=200 if database == "ok" else 503,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    counts = await services.store.count_by_status()
    smtp = smtp_report(services.worker, services.mailer)
    if smtp.delivering:  # else the worker processes know how SMTP fares, not this one
        services.metrics.smtp_state(
            up=smtp.up,
            paused=smtp.paused,
            unreachable=smtp.unreachable,
            last_contact=smtp.last_contact,
        )
    return Response(
        services.metrics.exposition(counts),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
