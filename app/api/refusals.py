"""The refusals a route can answer, declared once for the OpenAPI document.

Every /v1 route passes `app.api.middleware.Admit` (401, 429); a route that needs a scope
refuses a key without it (403); a route with a body can be too
big (413) or wrong (422); a route that touches the store can find it busy (503). Each router
and route declares the groups that apply; tests.test_api walks the document to check none is
missing.
"""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]

ADMISSION: Responses = {
    400: {"description": "The URL holds a NUL character (%00), which nothing can match."},
    401: {"description": "Missing or wrong API key (checked before the body is read)."},
    429: {"description": "The caller's RATE_LIMIT is spent; retry after Retry-After seconds."},
}
SCOPED: Responses = {
    403: {"description": "The key lacks the scope this route needs; `detail` names it."},
}
BODY: Responses = {
    413: {"description": "The body, or an attachment, is larger than its limit."},
    422: {"description": "The request cannot be sent as it is; `detail` names the field."},
}
STORE: Responses = {
    503: {"description": "The database is busy or too much is waiting; retry after Retry-After."},
}
