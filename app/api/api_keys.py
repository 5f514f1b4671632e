"""Callers' API keys: `name:key`, `name:sha256:<hex>`, or a bare key (named by its hash).

Only SHA-256 digests are kept in memory, so a configuration that gives hashes never holds a
usable key at all. Matching hashes the offered key and compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from app.api.callers import Caller

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class ApiKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    caller: Caller
    digest: str = Field(repr=False)

    @property
    def name(self) -> str:
        return self.caller.name


def parse_api_key(entry: str) -> ApiKey:
    name, sep, secret = entry.partition(":")
    if not sep or name == "sha256":  # a bare key, or a bare sha256:<hex>
        name, secret = "", entry
    elif not _NAME.fullmatch(name):
        raise ValueError(
            f"key name {name!r} may use only letters, digits, '_', '.' and '-' (name:key)"
        )
    if secret.startswith("sha256:"):
        digest = secret.removeprefix("sha256:").lower()
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError("a sha256: key must be 64 hex digits")
    elif len(secret) < 8:
        raise ValueError(f"the key of {name or 'an entry'!r} is shorter than 8 characters")
    else:
        digest = hashlib.sha256(secret.encode()).hexdigest()
    return ApiKey(caller=Caller(name or f"key-{digest[:8]}"), digest=digest)


def identify(keys: Sequence[ApiKey], offered: str) -> Caller | None:
    """The caller whose key was offered, or None. Every key is compared, in constant time."""
    offered_digest = hashlib.sha256(offered.encode()).hexdigest().encode()
    found = None
    for key in keys:
        if hmac.compare_digest(offered_digest, key.digest.encode()):
            found = key.caller
    return found
