"""The activity page: the signed-in caller's notifications, newest first, filtered and paged
as `GET /v1/notifications` does (the same store search and cursor), and its rows alone at
/console/rows, which the page polls every 2 s (console.js, data-poll) so that statuses change
while one watches."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.api.caller_limits import may_use_template
from app.api.callers import Caller
from app.api.deps import Services
from app.api.schemas import Status
from app.api.views import encode_cursor
from app.console.display import Row, row
from app.console.filters import FIELDS, PAGE, FilterProblem, Listing, read_listing
from app.console.pages import ConsoleCaller, render

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def activity(request: Request, caller: ConsoleCaller) -> Response:
    services: Services = request.app.state.services
    page = {
        "caller": caller,
        "statuses": list(Status),
        # as GET /v1/templates lists them: a key limited to some templates is not told the others
        "template_names": sorted(
            t.name for t in services.catalog.all() if may_use_template(caller, t.name)
        ),
    }
    try:
        listing = read_listing(request.query_params, caller=caller)
    except FilterProblem as problem:
        shown = {name: request.query_params.get(name, "") for name in FIELDS}
        response = render(
            request,
            "activity.html",
            **page,
            rows=[],
            values=shown,
            problem=problem,
            poll_query=None,
            next_query=None,
            first_query=None,
        )
        response.status_code = problem.status
        return response
    rows, next_cursor = await _page(request, caller=caller, listing=listing)
    return render(
        request,
        "activity.html",
        **page,
        rows=rows,
        values=listing.values,
        problem=None,
        poll_query=_query(listing, cursor=request.query_params.get("cursor")),
        next_query=_query(listing, cursor=next_cursor) if next_cursor else None,
        first_query=_query(listing, cursor=None) if listing.after else None,
    )


@router.get("/rows", response_class=HTMLResponse)
async def activity_rows(request: Request, caller: ConsoleCaller) -> Response:
    """The rows of the page with the same query: what the page's poll puts in its table."""
    try:
        listing = read_listing(request.query_params, caller=caller)
    except FilterProblem as problem:
        return HTMLResponse(status_code=problem.status)
    rows, _ = await _page(request, caller=caller, listing=listing)
    return render(request, "activity_rows.html", caller=caller, rows=rows)


async def _page(
    request: Request, *, caller: Caller, listing: Listing
) -> tuple[list[Row], str | None]:
    services: Services = request.app.state.services
    found = await services.store.search(
        listing.query, owner=listing.owner, limit=listing.limit, after=listing.after
    )
    now = time.time()
    next_cursor = encode_cursor(found[-1]) if len(found) == listing.limit else None
    return [row(n, now=now) for n in found], next_cursor


def _query(listing: Listing, *, cursor: str | None) -> str:
    """The query string of this listing (its filters, limit and `cursor`), for links."""
    params = {k: v for k, v in listing.values.items() if v}
    if listing.limit != PAGE:
        params["limit"] = str(listing.limit)
    if cursor:
        params["cursor"] = cursor
    return urlencode(params)
