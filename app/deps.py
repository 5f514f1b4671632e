"""What a request handler may depend on: the running services and the authenticated caller."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.mailer import Mailer
from app.rendering import TemplateCatalog
from app.settings import Settings
from app.store import Store
from app.worker import Worker


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    catalog: TemplateCatalog
    mailer: Mailer
    worker: Worker


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="One of the keys in API_KEYS.")


ANONYMOUS = "anonymous"


def require_api_key(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity: a fingerprint of its key (never the key), or 'anonymous'."""
    keys = services.settings.api_keys
    if not keys:
        return ANONYMOUS  # auth is off; start-up logged a warning
    offered = credentials.credentials.encode() if credentials else b""
    # Compare against every key, in constant time, so timing reveals nothing.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered, key.get_secret_value().encode())
    if matched:
        return "key-" + hashlib.sha256(offered).hexdigest()[:12]
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong API key: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


Authenticated = Depends(require_api_key)
CallerDep = Annotated[str, Authenticated]
