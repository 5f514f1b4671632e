"""ASGI middleware: request ids and HTTP request metrics; admission (API key, rate, body size)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastapi import HTTPException
from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import CALLER, Services, authenticate
from app.ids import new_token
from app.ops.logs import request_id
from app.ops.metrics import Metrics

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_NUL = "the URL holds a NUL character (%00), which no id, name or filter can contain"


class ObserveRequests:
    """Make every request observable: an X-Request-ID (the caller's, if it is a sane token, or a
    new one) returned and put on every log event of the request, and a count of requests by
    method, route template (not the raw path: ids would explode the label set) and status.
    Also answers HEAD as GET without the body, since every response passes here. One layer for
    all: each middleware layer costs the accept path ~4% (bench/)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self._requests = metrics.http_requests
        self._counters: dict[tuple[str, str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope["headers"]).get(b"x-request-id", b"")
        rid = offered.decode("latin-1") if _REQUEST_ID.fullmatch(offered) else new_token()
        id_header = (b"x-request-id", rid.encode("latin-1"))
        token = request_id.set(rid)
        status = 500
        method: str = scope["method"]
        # HEAD is GET without the body (RFC 9110 9.3.2), for every GET route: FastAPI's routes
        # answer only the methods they list, and load balancers probe with HEAD
        head = method == "HEAD"
        inner = {**scope, "method": "GET"} if head else scope

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # the headers (length included) stay GET's
            await send(message)

        try:
            await self.app(inner, receive, observed_send)
        finally:
            request_id.reset(token)
            self._count(method, getattr(inner.get("route"), "path", "unmatched"), status)

    def _count(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        if (counter := self._counters.get(key)) is None:
            counter = self._counters[key] = self._requests.labels(method, route, str(status))
        counter.inc()


class Admit:
    """Decide whether to take a request before reading its body: on /v1, who is calling (API key,
    else 401, or 429 once its address failed too often: app.api.auth_throttle); on every path,
    the size of the body (413 over `limit` bytes, declared or not).
    Nothing of an unauthenticated body is read. The caller is left in the scope for the routes,
    which charge the rate limit (only they know what a request costs); the body is read here
    (the application would hold it all anyway) and handed on in one piece. One layer for both:
    each layer costs the accept path ~4% (bench/)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            # no id, name or filter holds one; PostgreSQL could not even compare with it
            await _answer(scope, receive, send, 400, _NUL)
            return
        if path == "/v1" or path.startswith("/v1/"):
            services: Services = scope["app"].state.services
            authorization = headers.get(b"authorization")
            try:
                scope[CALLER] = authenticate(
                    services, authorization.decode("latin-1") if authorization else None
                )
            except HTTPException as exc:
                # only failures reach the throttle: a correct key costs no storage round trip
                wait = await services.auth_throttle.failed(scope)
                refusal = services.auth_throttle.too_many(wait) if wait else exc
                await _answer(
                    scope, receive, send, refusal.status_code, refusal.detail, refusal.headers
                )
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body larger than MAX_BODY_BYTES ({self.limit} bytes)"
        await _answer(scope, receive, send, 413, detail)


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
        scope, receive, send
    )
