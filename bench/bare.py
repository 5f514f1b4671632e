"""(a) The HTTP ceiling: a FastAPI endpoint that answers 202 and does nothing else."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/v1/notifications", status_code=202)
async def accept(request: Request) -> dict[str, Any]:
    await request.body()
    return {"status": "queued"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
