"""One webhook POST: the event's stored body, signed, to the address that was checked.

One httpx client (one connection pool) for every event of the process. Before each POST the
host is resolved again (on the event's caller's share of the `resolver`) and checked
(`targets`), and the request goes to that address, with the URL's host in `Host` and, for
https, as the TLS server name (SNI and certificate check), so a name that resolves elsewhere a
moment later cannot redirect us. Redirects are not followed, the proxy settings of the
environment are ignored, and the whole exchange ends within 5 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx

from app.webhooks.events import EventAttempt, WebhookEvent
from app.webhooks.resolver import WebhookResolver
from app.webhooks.signature import HEADER, signature_header
from app.webhooks.targets import AllowList, RefusedTarget, checked_address, parse_target

TIMEOUT_SECONDS = 5.0
# read at most this much of an answer (so the connection can be reused), never more
_ANSWER_BYTES = 64 * 1024
_ERROR_CHARS = 300


class WebhookSender:
    def __init__(
        self, *, allow: AllowList, resolver: WebhookResolver, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self._allow = allow
        self._resolver = resolver
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,  # an HTTP_PROXY would connect where we did not check
            headers={"User-Agent": "Notifier-Webhooks/1"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, event: WebhookEvent, secrets: Sequence[str]) -> EventAttempt:
        """POST the event once; the attempt says whether the receiver took it (2xx)."""
        at, started = time.time(), time.perf_counter()
        code: int | None = None
        try:
            code = await self._post(event, secrets)
            error = None if 200 <= code < 300 else _refusal(code)
        except RefusedTarget as exc:
            error = f"callback_url refused: {exc}"
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return EventAttempt(
            at=at,
            status_code=code,
            error=None if error is None else error[:_ERROR_CHARS],
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    async def _post(self, event: WebhookEvent, secrets: Sequence[str]) -> int:
        target = parse_target(event.url)
        url, extensions = event.url, {}
        headers = {
            "Content-Type": "application/json",
            "Notifier-Event-Id": event.id,
            "Notifier-Event-Type": event.type,
        }
        if not self._allow.allows(target):
            address = await checked_address(target, resolver=self._resolver, caller=event.caller)
            url = target.at(address)
            headers["Host"] = target.host_header
            extensions["sni_hostname"] = target.host
        body = event.body.encode()
        headers[HEADER] = signature_header(body, secrets, timestamp=int(time.time()))
        async with (
            asyncio.timeout(self._timeout),
            self._client.stream(
                "POST", url, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > _ANSWER_BYTES:
                    break
            return response.status_code


def _refusal(code: int) -> str:
    if 300 <= code < 400:
        return f"the receiver answered {code}; redirects are not followed"
    return f"the receiver answered {code}"
