"""Routes that FastAPI documents but a hand-written handler serves.

For each request FastAPI solves the endpoint's dependencies and parameters generically, and
validates what it returns. On POST /v1/notifications that machinery cost more than accepting the
notification did (about a third of the process's time in profiles; see bench/). A `direct` route
keeps everything FastAPI derives from the endpoint's signature (the OpenAPI schema, examples,
security) and is served by a handler that reads the same arguments by hand and calls the same
endpoint. Errors are raised as FastAPI would raise them, so they reach the same handlers.

Every route with a body is served this way, so that every body is read by `app.api.json_body`
(FastAPI's own reading, `json.loads`, lets through what no mail can carry).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def served_by(handler: Handler) -> type[APIRoute]:
    """A route class whose requests go to `handler` instead of FastAPI's generic one."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            return handler

    return DirectRoute
