"""One delivery attempt of a claimed notification: render, send, record the outcome.

The retry policy lives here and nowhere else: temporary failures are retried with exponential
backoff and jitter until MAX_ATTEMPTS or MAX_AGE; permanent ones fail at once; recipients the
server refused for good are recorded and not retried; only recipients still pending are retried.

Once the server may have the mail, its outcome must be recorded: a database that is busy, locked
or full is tried again, with backoff, for as long as the claim's lease lasts (losing the record
would send the mail again once the lease expires).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.api.schemas import Status
from app.delivery.bounces import hard_bounces
from app.delivery.compose import compose, unsubscribe_links
from app.delivery.mailer import Mailer, OutgoingMail
from app.errors import (
    DeliveryError,
    PermanentError,
    SmtpConfigError,
    StoreUnavailable,
    TemplateBroken,
    TemplateNotFound,
)
from app.ops.logs import event
from app.ops.metrics import Metrics
from app.rendering.catalog import TemplateCatalog
from app.settings import Settings
from app.store.protocol import NotificationStore
from app.store.records import (
    AttemptRecord,
    Notification,
    RecipientAttempt,
    Refusal,
    Skipped,
    Suppression,
)

log = logging.getLogger("app.delivery.attempt")

# Backoff between tries to record an outcome while the database is unavailable.
_RECORD_RETRY_FIRST, _RECORD_RETRY_MAX = 0.05, 2.0


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter': between half and all of base * 2^(attempt-1)."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str  # the attempt's detail: the server's reply on success, else what went wrong
    code: int | None = None
    subject: str | None = None
    pending: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    smtp_result: str | None = None  # "2xx", "4xx", "5xx", "connection"; None: not sent
    delivered: list[str] = field(default_factory=list)  # recipients the server took
    # the bytes given to the server, when it took them for at least one recipient
    message: bytes | None = None
    recipients: tuple[RecipientAttempt, ...] = ()  # what this attempt did to each recipient
    # every recipient skipped as suppressed so far (this attempt's and earlier ones')
    suppressed: list[Skipped] = field(default_factory=list)

    def last_error(self, refused: list[Refusal]) -> str | None:
        """What the notification's last_error says: never a success reply; after a success,
        the recipients refused for good (`refused`: all of them so far), if any."""
        if self.status is not Status.SENT:
            return self.detail
        if not refused:
            return None
        return "refused: " + "; ".join(f"{r.email}: {r.code} {r.message}" for r in refused)


def _reply_class(code: int | None) -> str:
    return "connection" if code is None else f"{code // 100}xx"


def _describe(replies: dict[str, tuple[int, str]]) -> str:
    return "; ".join(f"{rcpt}: {code} {text}" for rcpt, (code, text) in replies.items())


class Delivery:
    def __init__(
        self,
        *,
        settings: Settings,
        store: NotificationStore,
        catalog: TemplateCatalog,
        mailer: Mailer,
        metrics: Metrics,
        recorded: Callable[[], None] = lambda: None,
        suppressed: Callable[[str], None] = lambda caller: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._catalog = catalog
        self._mailer = mailer
        self._metrics = metrics
        self._links = unsubscribe_links(settings)
        # told after a recorded attempt that may owe a webhook event: the dispatcher looks then
        self._recorded = recorded
        # told of a caller whose list just grew by a hard bounce (app.api.suppression_hint)
        self._suppressed = suppressed

    async def attempt(self, notification: Notification) -> Outcome:
        """Make one attempt, record it and return its outcome. Raises SmtpConfigError, after
        giving the claim back without counting an attempt, when our SMTP settings are at fault."""
        started_at, started = time.time(), time.perf_counter()
        try:
            outcome = self._give_up_if_due(notification, await self._send(notification))
        except (SmtpConfigError, asyncio.CancelledError):
            await asyncio.shield(self._store.release(notification, at=time.time()))
            raise
        ms = (time.perf_counter() - started) * 1000
        next_attempt_at = None
        if outcome.status is Status.DEFERRED:
            next_attempt_at = time.time() + self._delay(notification)
        attempt = AttemptRecord(
            at=started_at,
            outcome=outcome.status,
            smtp_code=outcome.code,
            detail=outcome.detail,
            duration_ms=ms,
            recipients=outcome.recipients,
        )
        template, caller = notification.request.template, notification.caller
        if not await self._record(notification, outcome, attempt, next_attempt_at):
            event(
                log,
                "notification.lease_lost",
                level=logging.WARNING,
                id=notification.id,
                outcome=outcome.status,
                hint="another claim took this notification over; this attempt is not recorded",
            )
            return outcome
        if notification.request.callback_url is not None:
            self._recorded()
        sent = outcome.status is Status.SENT
        self._metrics.outcome(
            outcome.status,
            template=template,
            caller=caller,
            smtp_result=outcome.smtp_result,
            latency=time.time() - notification.created_at if sent else None,
        )
        event(
            log,
            f"notification.{outcome.status}",
            level=logging.INFO if outcome.status is not Status.FAILED else logging.WARNING,
            id=notification.id,
            caller=caller,
            template=template,
            attempt=notification.attempt_count + 1,
            smtp_code=outcome.code,
            ms=round(ms, 1),
            retry_at=round(next_attempt_at, 3) if next_attempt_at else None,
            refused=len(outcome.refused) or None,
            request_id=notification.request_id,
        )
        return outcome

    async def _record(
        self,
        notification: Notification,
        outcome: Outcome,
        attempt: AttemptRecord,
        next_attempt_at: float | None,
    ) -> bool:
        """Record the attempt; while the database is unavailable, try again until the lease
        runs out (`due_at` of a claimed notification). False if the lease was taken over."""
        refused = [*notification.refused, *outcome.refused]
        delivered = list(dict.fromkeys([*(notification.delivered or ()), *outcome.delivered]))
        bounced = [
            Suppression(caller=notification.caller, address=email, reason="hard_bounce")
            for email in hard_bounces(outcome.refused, codes=self._settings.hard_bounce_codes)
        ]
        delay = _RECORD_RETRY_FIRST
        while True:
            try:
                # first: should the record fail for good (lease lost), the server's word on
                # these addresses still holds
                await self._store.suppress(bounced)
                if bounced:
                    self._suppressed(notification.caller)
                return await self._store.finish_attempt(
                    notification,
                    status=outcome.status,
                    attempt=attempt,
                    subject=outcome.subject,
                    pending=outcome.pending,
                    delivered=delivered,
                    refused=refused,
                    last_error=outcome.last_error(refused),
                    next_attempt_at=next_attempt_at,
                    message=outcome.message,
                    suppressed=outcome.suppressed,
                )
            except StoreUnavailable as exc:
                if time.time() + delay >= (notification.due_at or 0):
                    raise
                event(
                    log,
                    "notification.record_retry",
                    level=logging.WARNING,
                    id=notification.id,
                    outcome=outcome.status,
                    error=str(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECORD_RETRY_MAX)

    def _delay(self, notification: Notification) -> float:
        return retry_delay(
            notification.attempt_count + 1,
            base=self._settings.retry_base_seconds,
            cap=self._settings.retry_max_seconds,
        )

    def _give_up_if_due(self, notification: Notification, outcome: Outcome) -> Outcome:
        if outcome.status is not Status.DEFERRED:
            return outcome
        attempts = notification.attempt_count + 1
        if attempts >= self._settings.max_attempts:
            reason = f"gave up after {attempts} attempts: {outcome.detail}"
        elif time.time() - (notification.retried_at or notification.created_at) >= (
            self._settings.max_age
        ):
            reason = f"gave up after MAX_AGE ({self._settings.max_age:g} s): {outcome.detail}"
        else:
            return outcome
        return dataclasses.replace(outcome, status=Status.FAILED, detail=reason)

    async def _send(self, notification: Notification) -> Outcome:
        try:
            rendered, mail = compose(
                notification,
                catalog=self._catalog,
                default_sender=self._settings.mail_from,
                links=self._links,
            )
        except (TemplateBroken, TemplateNotFound) as exc:
            return Outcome(Status.FAILED, str(exc))
        except Exception as exc:  # a message we cannot build will never send: do not retry
            log.exception("notification.unbuildable", extra={"fields": {"id": notification.id}})
            return Outcome(Status.FAILED, f"could not build the message: {exc}")

        pending = notification.pending
        if pending is None:  # not tried yet, or retried: all but those who have it already
            have = set(notification.delivered or ())
            pending = [rcpt for rcpt in mail.recipients if rcpt not in have]
        # checked at every attempt: the list may have changed since the last one
        found = await self._store.suppressed_among(
            notification.caller, pending, category=notification.request.category
        )
        skipped = [Skipped(r, found[r.lower()].reason) for r in pending if r.lower() in found]
        suppressed = [*notification.suppressed, *skipped]
        pending = [rcpt for rcpt in pending if rcpt.lower() not in found]
        outcome = await self._transmit(
            notification, mail, rendered.subject, pending=pending, suppressed=len(suppressed)
        )
        return dataclasses.replace(
            outcome,
            recipients=(
                *outcome.recipients,
                *(RecipientAttempt(s.email, "suppressed", message=s.reason) for s in skipped),
            ),
            suppressed=suppressed,
        )

    async def _transmit(
        self,
        notification: Notification,
        mail: OutgoingMail,
        subject: str,
        *,
        pending: list[str],
        suppressed: int,
    ) -> Outcome:
        """Send to `pending`, the recipients neither delivered nor suppressed (`suppressed`:
        how many are) and make the outcome of it."""
        if not pending:
            return _nothing_to_send(notification, subject)
        try:
            result = await self._mailer.send(mail, pending)
        except SmtpConfigError:
            raise
        except DeliveryError as exc:
            status = Status.FAILED if isinstance(exc, PermanentError) else Status.DEFERRED
            remaining = [rcpt for rcpt in pending if rcpt not in exc.delivered]
            return Outcome(
                status,
                str(exc),
                exc.code,
                subject,
                remaining,
                smtp_result=_reply_class(exc.code),
                delivered=exc.delivered,
                message=mail.data if exc.delivered else None,
                recipients=(
                    *_each(exc.delivered, "delivered"),
                    *_each(remaining, status.value, code=exc.code),
                ),
            )

        refused = [Refusal(rcpt, code, text) for rcpt, (code, text) in result.refused.items()]
        per_recipient = (
            *_each(result.delivered, "delivered"),
            *(RecipientAttempt(r, "deferred", c, t) for r, (c, t) in result.deferred.items()),
            *(RecipientAttempt(r, "refused", c, t) for r, (c, t) in result.refused.items()),
        )
        sent = mail.data if result.delivered else None
        if result.deferred:
            code = min(code for code, _ in result.deferred.values())
            detail = "recipients deferred: " + _describe(result.deferred)
            deferred = list(result.deferred)
            return Outcome(
                Status.DEFERRED,
                detail,
                code,
                subject,
                deferred,
                refused,
                "4xx",
                result.delivered,
                message=sent,
                recipients=per_recipient,
            )
        if len(notification.refused) + len(refused) + suppressed == len(mail.recipients):
            detail = "all recipients refused: " + _describe(result.refused)
            code = min(code for code, _ in result.refused.values())
            return Outcome(
                Status.FAILED,
                detail,
                code,
                subject,
                [],
                refused,
                "5xx",
                message=sent,
                recipients=per_recipient,
            )
        if not result.delivered:  # the rest got it in earlier attempts; these were refused
            detail = "remaining recipients refused: " + _describe(result.refused)
            code = min(code for code, _ in result.refused.values())
            return Outcome(
                Status.SENT,
                detail,
                code,
                subject,
                [],
                refused,
                "5xx",
                message=sent,
                recipients=per_recipient,
            )
        # the success reply alone: refusals are kept apart, per recipient
        delivered = result.delivered
        return Outcome(
            Status.SENT,
            result.reply,
            250,
            subject,
            [],
            refused,
            "2xx",
            delivered,
            message=sent,
            recipients=per_recipient,
        )


def _nothing_to_send(notification: Notification, subject: str) -> Outcome:
    """Every recipient left is suppressed: nothing goes to the SMTP server. The notification
    ends `suppressed`, unless some recipients had it already (sent) or were refused (failed)."""
    if notification.delivered:
        status, detail = Status.SENT, "the remaining recipients are suppressed"
    elif notification.refused:
        status, detail = Status.FAILED, "every recipient was refused or is suppressed"
    else:
        status, detail = Status.SUPPRESSED, "every recipient is suppressed"
    return Outcome(status, detail, subject=subject)


def _each(
    recipients: list[str], outcome: str, *, code: int | None = None
) -> tuple[RecipientAttempt, ...]:
    return tuple(RecipientAttempt(rcpt, outcome, code) for rcpt in recipients)
