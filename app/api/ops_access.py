"""Who may look inside the service: /metrics needs METRICS_TOKEN when it is set; /readyz shows
hosts, ports and SMTP replies only to that token or an admin API key. A wrong credential
counts as a failed authentication (AUTH_FAILURE_LIMIT), as a wrong key on /v1 does."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status
from pydantic import SecretStr

from app.api.deps import Services, authenticate, bearer_token


def token_matches(expected: SecretStr, offered: str | None) -> bool:
    """Constant time, length included: the digests compared always have the same length."""
    if offered is None:
        return False
    want = hashlib.sha256(expected.get_secret_value().encode()).digest()
    return hmac.compare_digest(want, hashlib.sha256(offered.encode()).digest())


async def require_metrics_token(request: Request, services: Services) -> None:
    """Nothing when METRICS_TOKEN is unset or was sent; else 401 (429 past the throttle)."""
    expected = services.settings.metrics_token
    if expected is None:
        return
    if token_matches(expected, bearer_token(request.headers.get("authorization"))):
        return
    if wait := await services.auth_throttle.failed(request.scope):
        raise services.auth_throttle.too_many(wait)
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong metrics token: send 'Authorization: Bearer <METRICS_TOKEN>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def sees_details(request: Request, services: Services) -> bool:
    """Whether this request may see what /readyz knows in full: with METRICS_TOKEN or an admin
    key (every request with AUTH=off). A request without credentials is an ordinary probe; one
    with a wrong credential is counted as a failure, and gets the short answer all the same."""
    authorization = request.headers.get("authorization")
    expected = services.settings.metrics_token
    if expected is not None and token_matches(expected, bearer_token(authorization)):
        return True
    try:
        caller = authenticate(services, authorization)
    except HTTPException:
        if authorization is not None:
            await services.auth_throttle.failed(request.scope)
        return False
    return caller.admin
