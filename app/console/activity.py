"""The activity page and a notification's page (to be built)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.console.pages import ConsoleCaller, render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def activity(request: Request, caller: ConsoleCaller) -> Response:
    return render(request, "activity.html", caller=caller)
