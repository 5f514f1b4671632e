"""What a request handler may depend on: the running services and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.auth_throttle import AuthThrottle
from app.api.callers import ANONYMOUS, Caller, Scope
from app.api.keyring import Keyring
from app.api.queue_depth import QueueDepth
from app.api.rate_limit import RateLimit, RateLimiter
from app.api.suppression_hint import SuppressionHint
from app.delivery.mailer import Mailer
from app.delivery.worker import Worker
from app.ops.metrics import Metrics
from app.rendering.catalog import TemplateCatalog
from app.settings import Settings
from app.store.protocol import NotificationStore
from app.webhooks.resolver import WebhookResolver


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: NotificationStore
    catalog: TemplateCatalog
    # None with DELIVERY=off: this process only accepts; worker processes deliver
    mailer: Mailer | None
    worker: Worker | None
    metrics: Metrics
    limiter: RateLimiter
    queue: QueueDepth
    keys: Keyring  # API_KEYS and the keys file's, as last read
    auth_throttle: AuthThrottle
    suppression_hint: SuppressionHint  # whose lists the accept path must look into
    # callback_url hosts are looked up here, never on the loop's executor (mail's lookups)
    webhook_resolver: WebhookResolver


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="One of the keys in API_KEYS or the keys file.")


# Where the admission layer (app.api.middleware.Admit) leaves the caller it authenticated.
CALLER = "notifier.caller"


async def require_api_key(
    request: Request,
    services: ServicesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller that `app.api.middleware.Admit` authenticated (before the body was read), charged
    one unit of their rate limit. The bearer dependency is here so that the OpenAPI document
    shows the scheme."""
    caller = caller_of(request)
    await charge(services, caller, 1)
    return caller


def scoped(scope: Scope) -> Any:
    """A dependency: the authenticated caller, if its key has `scope` (else 403), charged one
    unit of its rate limit."""

    async def require_scope(
        request: Request,
        services: ServicesDep,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = authorized(request, scope)
        await charge(services, caller, 1)
        return caller

    return Depends(require_scope)


def authorized(request: Request, scope: Scope) -> Caller:
    """The authenticated caller, if its key has `scope`, for the routes FastAPI serves and the
    ones served by hand alike."""
    return check_scope(caller_of(request), scope)


def check_scope(caller: Caller, scope: Scope) -> Caller:
    """`caller`, if its key has `scope`, else a 403 naming the scope: the one check of scopes,
    for the API and the console alike."""
    if not caller.may(scope):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"the key of {caller.name!r} lacks the scope {scope.value!r}",
        )
    return caller


def caller_of(request: Request) -> Caller:
    caller: Caller | None = request.scope.get(CALLER)
    if caller is None:  # only if a route outside /v1 asks for a caller: refuse, never guess
        raise _unauthorized()
    return caller


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, read as HTTPBearer reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(services: Services, authorization: str | None) -> Caller:
    """The caller whose key was sent (API_KEYS or the keys file), or ANONYMOUS when auth is
    off."""
    if services.settings.auth == "off":
        return ANONYMOUS
    token = bearer_token(authorization)
    caller = services.keys.identify(token) if token else None
    if caller is None:
        raise _unauthorized()
    return caller


async def charge(services: Services, caller: Caller, cost: int) -> None:
    """Spend `cost` units of the caller's rate limit (its key's, else RATE_LIMIT), or refuse
    with 429 and a Retry-After after which the same request will pass. Each route charges
    once, the whole cost of the request (a batch: one unit per notification), so that
    Retry-After can be true."""
    limit = rate_limit_of(services, caller)
    if limit is None:
        return
    wait = await services.limiter.take(caller.name, cost, limit)
    if wait:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit of {limit} exceeded for {caller.name!r}; retry in {wait:.0f} s",
            headers={"Retry-After": f"{wait:.0f}"},
        )


def rate_limit_of(services: Services, caller: Caller) -> RateLimit | None:
    return caller.rate_limit or services.settings.rate_limit


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong API key: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


Authenticated = Depends(require_api_key)
CallerDep = Annotated[Caller, Authenticated]
# the caller of a route that needs a scope (403 without it); POST notifications: Sender
Sender = Annotated[Caller, scoped(Scope.SEND)]
Reader = Annotated[Caller, scoped(Scope.READ)]
Canceller = Annotated[Caller, scoped(Scope.CANCEL)]
