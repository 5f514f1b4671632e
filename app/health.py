"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.deps import ServicesDep
from app.errors import NotifierError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not usable; see body."}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """The database is usable, the SMTP server accepts a connection (TLS and AUTH included) and
    delivery is not paused by an SMTP configuration fault."""
    checks: dict[str, str] = {}
    try:
        await services.store.ping()
        checks["database"] = "ok"
    except NotifierError as exc:
        checks["database"] = str(exc)
    try:
        await services.mailer.check()
        checks["smtp"] = "ok"
    except NotifierError as exc:
        checks["smtp"] = str(exc)
    paused = services.worker.paused
    checks["delivery"] = "ok" if paused is None else f"paused: {paused}"
    ready = all(state == "ok" for state in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    counts = await services.store.count_by_status()
    return Response(
        services.metrics.exposition(counts),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
