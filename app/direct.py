"""Routes that FastAPI documents but a hand-written handler serves.

For each request FastAPI solves the endpoint's dependencies and parameters generically, and
validates what it returns. On POST /v1/notifications that machinery cost more than accepting the
notification did (about a third of the process's time in profiles; see bench/). A `direct` route
keeps everything FastAPI derives from the endpoint's signature (the OpenAPI schema, examples,
security) and is served by a handler that reads the same arguments by hand and calls the same
endpoint. Errors are raised as FastAPI would raise them, so they reach the same handlers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from app.errors import InvalidRequest

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
M = TypeVar("M", bound=BaseModel)


def served_by(handler: Handler) -> type[APIRoute]:
    """A route class whose requests go to `handler` instead of FastAPI's generic one."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            return handler

    return DirectRoute


async def json_body(request: Request, model: type[M]) -> M:
    """The body parsed as `model`, refused like FastAPI refuses it: 422 with `loc` from 'body'."""
    content_type = request.headers.get("content-type", "")
    subtype = content_type.partition(";")[0].strip().lower().rpartition("/")[2]
    if subtype != "json" and not subtype.endswith("+json"):
        raise InvalidRequest(
            ("body",), "send the body as JSON, with 'Content-Type: application/json'", "model_type"
        )
    body = await request.body()
    if not body:
        raise InvalidRequest(("body",), "Field required", "missing")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            errors = _field_errors(body, model) or errors
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors], body=body
        ) from None


def _field_errors(body: bytes, model: type[BaseModel]) -> list[ErrorDetails] | None:
    """The errors that name the field, for JSON that pydantic's parser refuses but Python's
    reads: a lone surrogate ("\\ud800") in a string is the case. None if Python refuses it too."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON for Python either
        return None
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return exc.errors(include_url=False, include_context=False, include_input=False)
    return None
