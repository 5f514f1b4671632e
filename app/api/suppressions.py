"""The HTTP API for the suppression list: list, add (or change) and remove entries.

Each caller has a list of its own; an admin key sees and changes every caller's (`?caller=`
picks one). Reading needs the `read` scope; changing needs `send`, since an entry decides
where the caller's own mail goes.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import ValidationError

from app.addresses import parse_address
from app.api.callers import Caller
from app.api.deps import Reader, Sender, ServicesDep
from app.api.ownership import listed_owner
from app.api.refusals import ADMISSION, BODY, SCOPED, STORE
from app.api.schemas import Category
from app.api.suppression_schemas import (
    Reason,
    SuppressionPage,
    SuppressionRequest,
    SuppressionView,
)
from app.api.views import moment
from app.errors import InvalidRequest
from app.store.records import Suppression

router = APIRouter(
    prefix="/v1/suppressions",
    tags=["suppressions"],
    responses={
        **ADMISSION,
        **SCOPED,
        **STORE,
        403: {"description": "`caller` was given by a key without the admin scope."},
    },
)

CallerQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="Only this caller's list (admin keys only).",
    ),
]


@router.get("", response_model=SuppressionPage)
async def list_suppressions(
    services: ServicesDep,
    me: Reader,
    address: str | None = None,
    reason: Reason | None = None,
    category: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
    caller: CallerQuery = None,
) -> SuppressionPage:
    """The caller's list (an admin key's: every caller's), by address. `category` shows the
    entries of that category only (not those for every category)."""
    found = await services.store.suppressions(
        owner=listed_owner(me, caller),
        address=_address(address, ("query", "address")) if address is not None else None,
        reason=reason,
        category=category,
        limit=limit,
        after=_decode_cursor(cursor) if cursor else None,
    )
    return SuppressionPage(
        items=[_view(s) for s in found],
        next_cursor=_encode_cursor(found[-1]) if len(found) == limit else None,
    )


# `:path`: a local part may hold a "/" (a/b@example.com is an address SMTP accepts), which
# a plain path parameter would not match, leaving such an entry impossible to add or remove
@router.put(
    "/{address:path}",
    response_model=SuppressionView,
    responses={
        **BODY,
        200: {"description": "The entry was there; it has this reason now."},
        201: {"description": "Added."},
    },
)
async def put_suppression(
    address: str,
    body: SuppressionRequest,
    services: ServicesDep,
    me: Sender,
    response: Response,
    caller: CallerQuery = None,
) -> SuppressionView:
    """Stop the caller's mail (of `category`, or all of it) from going to `address`. Idempotent:
    putting an entry that is there changes its reason only."""
    entry = Suppression(
        caller=_whose(me, caller),
        address=_address(address, ("path", "address")),
        reason=body.reason,
        category=body.category,
    )
    created = await services.store.put_suppression(entry)
    services.suppression_hint.added(entry.caller)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    [stored] = await services.store.suppressions(
        owner=entry.caller, address=entry.address, category=entry.category or "", limit=1
    )
    return _view(stored)


@router.delete(
    "/{address:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={404: {"description": "The address is not on the list (in that category)."}},
)
async def delete_suppression(
    address: str,
    services: ServicesDep,
    me: Sender,
    category: Annotated[
        Category | None,
        Query(description="Only the entry of this category; without it, every entry."),
    ] = None,
    caller: CallerQuery = None,
) -> Response:
    """Let the caller's mail reach `address` again: every entry of it, or the one of
    `category`. An admin key without `caller` removes it from every caller's list."""
    email = _address(address, ("path", "address"))
    removed = await services.store.unsuppress(
        email,
        owner=listed_owner(me, caller),
        category=category,
        every_category=category is None,
    )
    if not removed:
        raise InvalidRequest(
            ("path", "address"), f"{email} is not on the suppression list", status=404
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _whose(me: Caller, asked: str | None) -> str:
    """Whose list a change goes to: the caller's own, or (admin keys only) the one named."""
    return listed_owner(me, asked) or me.name


def _address(value: str, loc: tuple[str, ...]) -> str:
    """The address as the SMTP server is given it (IDNA domain), in lower case."""
    try:
        parsed = parse_address(value)
    except (ValidationError, ValueError):
        raise InvalidRequest(loc, "not a valid email address like ada@example.com") from None
    if parsed.name is not None:
        raise InvalidRequest(loc, "a bare address like ada@example.com, without a name")
    return parsed.smtp_email.lower()


def _view(entry: Suppression) -> SuppressionView:
    return SuppressionView(
        address=entry.address,
        caller=entry.caller,
        category=entry.category,
        reason=Reason(entry.reason),
        created_at=moment(entry.created_at),
    )


def _encode_cursor(entry: Suppression) -> str:
    key = [entry.address, entry.caller, entry.category or ""]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, str, str]:
    try:
        address, caller, category = json.loads(base64.urlsafe_b64decode(cursor))
        # text a store can hold: JSON can spell a lone surrogate or a NUL, which neither
        # SQLite nor PostgreSQL takes as a query argument
        if all(_storable(v) for v in (address, caller, category)):
            return address, caller, category
    except (ValueError, TypeError):
        pass
    raise InvalidRequest(("query", "cursor"), "not a cursor from a previous page's next_cursor")


def _storable(value: object) -> bool:
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
