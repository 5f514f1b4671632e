"""Liveness and readiness probes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServicesDep
from app.api.ops_access import require_metrics_token, sees_details
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
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    """Can the service accept notifications? 200 while the database is usable, even when the
    SMTP server is away or delivery waits for a fix of the SMTP settings: accepting then is
    exactly what the service promises. The body says how the SMTP server and delivery fare,
    from what the worker already knows; it never opens a connection of its own. In words
    only (`ok`, `failing`, `paused`…); with METRICS_TOKEN or an admin key, with the reasons,
    which name hosts, ports and what the SMTP server replied."""
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
    status = "not ready" if database != "ok" else "ready" if smtp.healthy else "degraded"
    code = 200 if database == "ok" else 503
    if not await sees_details(request, services):
        words = {
            "database": "ok" if database == "ok" else "unusable",
            "smtp": smtp.smtp_word,
            "delivery": smtp.delivery_word,
        }
        return JSONResponse({"status": status, "checks": words}, status_code=code)
    last = smtp.last_contact
    return JSONResponse(
        {
            "status": status,
            "checks": {"database": database, "smtp": smtp.smtp, "delivery": smtp.delivery},
            "smtp_last_contact": None if last is None else _rfc3339(last),
        },
        status_code=code,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"description": "METRICS_TOKEN is set and was not sent."},
        429: {"description": "Too many failed authentications from this address."},
    },
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics (text exposition format). With METRICS_TOKEN set, only for
    `Authorization: Bearer <METRICS_TOKEN>`."""
    await require_metrics_token(request, services)
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
