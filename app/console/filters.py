"""The activity page's filters, read from its query string: the same store filter, owner and
cursor as `GET /v1/notifications` builds (app.api.listing, app.api.ownership, app.api.views),
with a problem named by its form field instead of the API's JSON 422.

Times come from the browser's `datetime-local` inputs, which carry no zone: they are read as
UTC (the page says so); a time with an offset is taken as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import HTTPException
from starlette.datastructures import QueryParams

from app.api.callers import Caller
from app.api.listing import notification_filter
from app.api.ownership import listed_owner
from app.api.schemas import Status
from app.api.views import decode_cursor
from app.errors import InvalidRequest
from app.store.records import NotificationFilter

PAGE = 50
MAX_PAGE = 200
# each field's longest value: beyond it, nothing stored could match (names, tags: 64;
# template names: 100; addresses: 320)
_LONGEST = {"template": 100, "tag": 64, "caller": 64, "recipient": 320, "from": 40, "to": 40}
FIELDS = ("status", "template", "tag", "caller", "recipient", "from", "to")


class FilterProblem(Exception):
    """A filter the page cannot apply: which field, why, and the status to answer with."""

    def __init__(self, name: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Listing:
    """What one page of the activity list shows."""

    query: NotificationFilter
    owner: str | None
    limit: int = PAGE
    after: tuple[float, str] | None = None
    # the form's values as given, to show them again
    values: dict[str, str] = field(default_factory=dict)


def read_listing(params: QueryParams, *, caller: Caller) -> Listing:
    """The listing the query string asks for; FilterProblem naming the field if it cannot be."""
    values = {name: params.get(name, "").strip() for name in FIELDS}
    for name, longest in _LONGEST.items():
        if len(values[name]) > longest:
            raise FilterProblem(name, f"at most {longest} characters")
    try:
        query = notification_filter(
            status=_status(values["status"]),
            tag=values["tag"] or None,
            template=values["template"] or None,
            recipient=values["recipient"] or None,
            created_after=_moment("from", values["from"]),
            created_before=_moment("to", values["to"]),
        )
        cursor = params.get("cursor")
        after = decode_cursor(cursor) if cursor else None
    except InvalidRequest as exc:
        raise FilterProblem(str(exc.loc[-1]), exc.msg) from None
    try:
        owner = listed_owner(caller, values["caller"] or None)
    except HTTPException as exc:
        raise FilterProblem("caller", str(exc.detail), status=exc.status_code) from None
    return Listing(query, owner, _limit(params.get("limit")), after, values)


def _status(text: str) -> Status | None:
    if not text:
        return None
    try:
        return Status(text)
    except ValueError:
        raise FilterProblem("status", f"one of {', '.join(Status)}") from None


def _moment(name: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        moment.timestamp()  # a moment beyond the calendar's ends once in UTC
    except (ValueError, OverflowError):
        raise FilterProblem(name, "a date and time such as 2026-11-28T09:30 (UTC)") from None
    return moment


def _limit(text: str | None) -> int:
    if not text:
        return PAGE
    # the length first: int() refuses over 4300 digits with a ValueError of its own (a 500)
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_PAGE):
        raise FilterProblem("limit", f"a whole number from 1 to {MAX_PAGE}")
    return int(text)
