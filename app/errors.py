"""The service's errors, grouped by what the caller can do about them.

NotifierError
├── InvalidRequest        the request cannot be sent as it is (HTTP 422 or 413, names the field)
├── TemplateNotFound      no template of that name (422 at accept time, 404 for preview)
├── TemplateBroken        a template on disk does not compile or failed to render
├── IdempotencyConflict   an Idempotency-Key reused for a different request (HTTP 422)
├── StoreUnavailable      the database is busy, locked or full (HTTP 503, try again)
├── SchemaNotCurrent      the database's schema is not this version's (run `notifier migrate`)
├── QueueFull             more than QUEUE_HIGH_WATER notifications wait (HTTP 503, try again)
└── DeliveryError         SMTP did not take the message
    ├── TransientError    4xx, refused/dropped connection, timeout: retry later
    ├── PermanentError    5xx: retrying will not help
    └── SmtpConfigError   our own SMTP settings are wrong (auth refused, TLS missing)
"""

from __future__ import annotations


class NotifierError(Exception):
    """Root of every error the service raises on purpose."""


class InvalidRequest(NotifierError):
    def __init__(
        self,
        loc: tuple[str | int, ...],
        msg: str,
        kind: str = "value_error",
        *,
        status: int = 422,
    ) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.kind = kind
        self.status = status  # 413 when the problem is size

    def detail(self) -> dict[str, object]:
        """One entry of a 422's `detail` list, shaped like FastAPI's own."""
        return {"loc": list(self.loc), "msg": self.msg, "type": self.kind}


class TemplateNotFound(NotifierError):
    def __init__(self, name: str) -> None:
        super().__init__(f"there is no template named {name!r}")
        self.name = name


class TemplateBroken(NotifierError):
    pass


class IdempotencyConflict(NotifierError):
    def __init__(self, notification_id: str) -> None:
        super().__init__(
            f"this Idempotency-Key was already used for a different request"
            f" (notification {notification_id}); use a new key for a new request"
        )
        self.notification_id = notification_id


class StoreUnavailable(NotifierError):
    pass


class SchemaNotCurrent(NotifierError):
    pass


class QueueFull(NotifierError):
    pass


class DeliveryError(NotifierError):
    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.delivered: list[str] = []  # recipients that got the mail before the failure

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.code} {text}" if self.code else text


class TransientError(DeliveryError):
    pass


class PermanentError(DeliveryError):
    pass


class SmtpConfigError(DeliveryError):
    pass
