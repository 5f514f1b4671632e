"""Our errors as HTTP answers, in FastAPI's shape: `{"detail": ...}`, and never larger than a few
kilobytes whatever the request held: a 4xx names what is wrong, it does not echo it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.errors import InvalidRequest, QueueFull, StoreUnavailable
from app.ops.logs import event

log = logging.getLogger("app.http")

MAX_ERRORS = 20  # errors listed for one request
ITEM_ERRORS = 3  # errors listed for one item of a batch (a batch has up to MAX_BATCH)
_TEXT = 300  # characters of a message
_NAME = 64  # characters of one part of a `loc`
_LOC = 12  # parts of a `loc`; a deeper one keeps its start and its end
_ECHO = 200  # bytes of JSON an `input` or `ctx` may take; a larger one is left out


def public_errors(
    errors: Sequence[Mapping[str, Any]], limit: int = MAX_ERRORS
) -> list[dict[str, Any]]:
    """Validation errors as an answer may show them: `msg` and `loc` shortened, `input` and
    `ctx` only when small, `url` never, at most `limit` of them (then a note that there are more).
    Text that cannot be encoded (a lone surrogate) is shown as its escape."""
    shown = [_public(error) for error in errors[:limit]]
    if len(errors) > limit:
        shown.append(
            {
                "loc": shown[-1]["loc"][:1] if shown else [],
                "msg": "more errors, not shown: correct these first",
                "type": "too_many_errors",
            }
        )
    return shown


def _public(error: Mapping[str, Any]) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else _text(str(part), _NAME) for part in error["loc"]]
    if len(loc) > _LOC:
        loc = [*loc[: _LOC // 2], "…", *loc[-(_LOC // 2 - 1) :]]
    public: dict[str, Any] = {
        "loc": loc,
        "msg": _text(str(error.get("msg", "")), _TEXT),
        "type": _text(str(error.get("type", "value_error")), _NAME),
    }
    for key in ("input", "ctx"):
        if key in error and (small := _small_json(error[key])) is not None:
            public[key] = small
    return public


def _text(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _small_json(value: Any) -> Any:
    """`value` as JSON values if that takes at most _ECHO bytes, else None."""
    if isinstance(value, str | bytes | list | dict) and len(value) > _ECHO:
        return None  # longer as JSON too; not worth encoding to find out
    try:
        encoded = json.dumps(value, default=str, allow_nan=False, ensure_ascii=False)
        if len(encoded.encode("utf-8")) > _ECHO:
            return None
    except (ValueError, TypeError, RecursionError):  # NaN, a lone surrogate, a cycle
        return None
    return json.loads(encoded)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. The router names only those of the first
    route that matched the path (POST for /v1/notifications, which GET serves too), so ask
    every route about every method."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    if "GET" in allowed and "HEAD" not in allowed:  # app.api.middleware answers HEAD as GET
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 to a body that is not even text (invalid UTF-8); to our callers
        # that is malformed JSON like any other, so it gets the same 422.
        if exc.status_code == 400:
            detail = [
                {"loc": ["body"], "msg": "the body is not valid UTF-8 JSON", "type": "json_invalid"}
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=headers)
        return JSONResponse(
            {"detail": _text(str(exc.detail), _TEXT)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_input(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": public_errors(exc.errors())}, status_code=422)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse({"detail": public_errors([exc.detail()])}, status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        event(log, "accept.backpressure", level=logging.WARNING, reason=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        event(log, "store.unavailable", level=logging.ERROR, error=str(exc))
        return JSONResponse(
            {"detail": "the database is busy; try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
