"""Delivery: claim a notification, render it, send it, record the outcome. The retry policy
lives here and nowhere else."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from app.errors import DeliveryError, PermanentError, TemplateBroken, TemplateNotFound
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


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str
    code: int | None = None
    subject: str | None = None
    message_id: str | None = None


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
        started_at, started = time.time(), time.perf_counter()
        outcome = await self._send(notification)
        ms = (time.perf_counter() - started) * 1000
        next_attempt_at = None
        if outcome.status is Status.DEFERRED:
            next_attempt_at = time.time() + retry_delay(
                len(notification.attempts) + 1,
                base=self._settings.retry_base_seconds,
                cap=self._settings.retry_max_seconds,
            )
        await self._store.finish_attempt(
            notification.id,
            status=outcome.status,
            attempt=AttemptRecord(
                at=started_at,
                outcome=outcome.status,
                smtp_code=outcome.code,
                detail=outcome.detail,
                duration_ms=ms,
            ),
            subject=outcome.subject,
            message_id=outcome.message_id,
            next_attempt_at=next_attempt_at,
        )
        log.info(
            "notification.%s id=%s template=%s code=%s ms=%.1f",
            outcome.status,
            notification.id,
            notification.request.template,
            outcome.code,
            ms,
        )

    async def _send(self, notification: Notification) -> Outcome:
        request = notification.request
        try:
            rendered = self._catalog.render(
                request.template, request.context, subject=request.subject
            )
            sender = request.sender or self._settings.mail_from
            mail = build_message(request, rendered, sender=sender)
        except (TemplateBroken, TemplateNotFound) as exc:
            return Outcome(Status.FAILED, str(exc))
        except Exception as exc:  # a message we cannot build will never send: do not retry
            log.exception("notification.unbuildable id=%s", notification.id)
            return Outcome(Status.FAILED, f"could not build the message: {exc}")

        try:
            result = await self._mailer.send(mail)
        except PermanentError as exc:
            return Outcome(Status.FAILED, str(exc), exc.code, rendered.subject)
        except DeliveryError as exc:
            return Outcome(Status.DEFERRED, str(exc), exc.code, rendered.subject)

        detail = result.reply
        if result.refused:
            detail += "; refused: " + "; ".join(
                f"{rcpt}: {code} {text}" for rcpt, (code, text) in result.refused.items()
            )
        return Outcome(Status.SENT, detail, None, rendered.subject, mail.message_id)
