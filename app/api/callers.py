"""Who is calling, and what their key lets them do.

A key gives its caller a name (notifications belong to it), scopes (which routes it may use)
and optional limits: the templates it may send, the senders it may use, the recipients it may
reach and a rate limit of its own; and, for status webhooks, a default callback URL and the
secrets its webhooks are signed with. `None` for a limit means the service's settings apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from app.api.rate_limit import RateLimit


class Scope(StrEnum):
    SEND = "send"
    READ = "read"
    CANCEL = "cancel"
    PREVIEW = "preview"
    ADMIN = "admin"  # every caller's notifications; implies the others


DEFAULT_SCOPES = frozenset({Scope.SEND, Scope.READ, Scope.CANCEL, Scope.PREVIEW})


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[Scope] = DEFAULT_SCOPES
    templates: tuple[str, ...] | None = None  # names or globs
    senders: tuple[str, ...] | None = None  # addresses or @domains, within ALLOWED_SENDERS
    recipients: tuple[str, ...] | None = None  # addresses or @domains
    rate_limit: RateLimit | None = None  # overrides RATE_LIMIT
    callback_url: str | None = None  # for requests without one of their own
    # sign its webhooks (the first is the current one; more while rotating); none: WEBHOOK_SECRET
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def may(self, scope: Scope) -> bool:
        return self.admin or scope in self.scopes


# With AUTH=off there is no one to tell apart: every request is this caller, who may do all.
ANONYMOUS = Caller("anonymous", frozenset(Scope))
