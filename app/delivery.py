"""Delivery: claim a notification, render it, send it, record the outcome. The retry policy
lives here and nowhere else."""

from __future__ import annotations

import logging
import random
import time

from app.errors import NotifierError, PermanentError, TemplateBroken, TemplateNotFound
from app.mailer import Mailer, build_message
from app.rendering import TemplateCatalog
from app.schemas import Status
from app.settings import Settings
from app.store import AttemptRecord, Notification, Store

log = logging.getLogger("app.delivery")


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter': between half and all of base * 2^(attempt-1)."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Delivery:
    def __init__(
        self, *, settings: Settings, store: Store, catalog: TemplateCatalog, mailer: Mailer
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalog = catalog
        self._mailer = mailer

    async def deliver(self, notification_id: str) -> None:
        """Entry point of the background task started by the accepting request."""
        notification = await self._store.claim(
            notification_id, lease_seconds=self._settings.smtp_timeout * 6
        )
        if notification is not None:
            await self._attempt(notification)

    async def _attempt(self, notification: Notification) -> None:
        request = notification.request
        started_at, started = time.time(), time.perf_counter()
        subject = None
        code = None
        next_attempt_at = None
        try:
            rendered = self._catalog.render(
                request.template, request.context, subject=request.subject
            )
            subject = rendered.subject
            mail = build_message(
                request, rendered, sender=request.sender or self._settings.mail_from
            )
            result = await self._mailer.send(mail)
        except (TemplateBroken, TemplateNotFound, PermanentError) as exc:
            status, detail = Status.FAILED, str(exc)
            code = getattr(exc, "code", None)
        except NotifierError as exc:
            attempt_number = len(notification.attempts) + 1
            status, detail, code = Status.DEFERRED, str(exc), getattr(exc, "code", None)
            next_attempt_at = time.time() + retry_delay(
                attempt_number,
                base=self._settings.retry_base_seconds,
                cap=self._settings.retry_max_seconds,
            )
        else:
            status = Status.SENT
            detail = result.reply
            if result.refused:
                detail += "; refused: " + "; ".join(
                    f"{rcpt}: {c} {m}" for rcpt, (c, m) in result.refused.items()
                )
        ms = (time.perf_counter() - started) * 1000
        await self._store.finish_attempt(
            notification.id,
            status=status,
            attempt=AttemptRecord(
                at=started_at, outcome=status, smtp_code=code, detail=detail, duration_ms=ms
            ),
            subject=subject,
            message_id=mail.message_id if status is Status.SENT else None,
            next_attempt_at=next_attempt_at,
        )
        log.info(
            "notification.%s id=%s template=%s code=%s ms=%.1f",
            status,
            notification.id,
            request.template,
            code,
            ms,
        )
