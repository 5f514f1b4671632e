"""The delivery worker: runs attempts with bounded concurrency, for fresh notifications handed
over by the accepting request and for due work it finds in the store (retries, scheduled mail,
notifications whose process died), pauses while the SMTP settings are wrong or the server does
not answer (probing it instead of burning attempts), and stops cleanly.

It is also the only one that probes the SMTP server: once at start, before the first attempt;
on a schedule while delivery waits; and when readiness asks for news older than
SMTP_PROBE_INTERVAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.delivery.attempt import Delivery
from app.delivery.mailer import Mailer
from app.errors import DeliveryError, SmtpConfigError, StoreUnavailable
from app.ops.logs import event
from app.settings import Settings
from app.store.protocol import NotificationStore
from app.store.records import Notification

log = logging.getLogger("app.delivery.worker")

_HOUSEKEEPING_SECONDS = 300.0
# While paused, probes back off (doubling from RETRY_BASE_SECONDS) to one every five minutes:
# each is a TLS handshake and a login the relay may count against us.
_PAUSED_PROBE_MAX_SECONDS = 300.0


class Worker:
    def __init__(
        self, *, settings: Settings, store: NotificationStore, delivery: Delivery, mailer: Mailer
    ) -> None:
        self._settings = settings
        self._store = store
        self._delivery = delivery
        self._mailer = mailer
        self._free_slots = settings.delivery_concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None
        self._cleaned_at = 0.0
        self.paused: str | None = None  # our SMTP settings are wrong
        self.unreachable: str | None = None  # the SMTP server does not answer
        self.checked = False  # the first probe has answered: attempts may start
        self._probe_task: asyncio.Task[None] | None = None
        self._probed_at = -settings.smtp_probe_interval
        self._next_probe_at = 0.0
        self._paused_backoff = self._first_paused_backoff()
        self.store_unavailable: str | None = None  # why the last poll could not reach the store

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="delivery-worker")

    def stop_claiming(self) -> None:
        """Start no new attempts (safe to call from a signal handler)."""
        self._stopping = True

    async def stop(self) -> None:
        """Take no new work; let attempts in flight finish within SHUTDOWN_GRACE_SECONDS, then
        cancel the rest (their claims are given back, so the next start sends them)."""
        self._stopping = True
        self._wake.set()
        if self._probe_task is not None:
            self._probe_task.cancel()  # a probe may wait SMTP_TIMEOUT at each step
        if self._loop is not None:
            await self._loop
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self._settings.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def wake(self) -> None:
        """New work is in the store: look now rather than at the next poll."""
        self._wake.set()

    async def deliver_now(self, notification_id: str) -> None:
        """The accepting request's background task: send at once if a slot is free; otherwise
        the notification stays queued and the loop takes it when one frees up.

        Never raises: it runs on the caller's connection after the 202, and an exception there
        makes the HTTP server drop the connection with any request in flight on it. Whatever
        fails (a locked database, anything), the notification is in the store for the loop."""
        if self._stopping or self._blocked() or self._free_slots == 0:
            self._wake.set()
            return
        self._free_slots -= 1
        try:
            notification = await self._store.claim(
                notification_id, lease_seconds=self._settings.lease_seconds
            )
            if notification is not None:
                await self._attempt(notification)
        except Exception as exc:
            event(
                log,
                "notification.handoff_failed",
                level=logging.WARNING,
                id=notification_id,
                error=str(exc) or repr(exc),
                hint="the delivery loop sends it",
            )
        finally:
            self._free_slots += 1
            self._wake.set()  # queued work that found no free slot can take this one now

    async def _attempt(self, notification: Notification) -> None:
        try:
            outcome = await self._delivery.attempt(notification)
        except SmtpConfigError as exc:
            self._pause(str(exc))
            return
        except Exception:
            # The claim keeps its lease; the notification is tried again once it expires.
            log.exception("notification.attempt_crashed", extra={"fields": {"id": notification.id}})
            return
        if outcome.smtp_result == "connection" and self.unreachable is None:
            # The server itself is gone: stop trying notification after notification (each
            # would only burn an attempt) and probe it instead; resume as soon as it answers.
            self.unreachable = outcome.detail
            event(log, "delivery.smtp_unreachable", level=logging.WARNING, reason=outcome.detail)

    def _pause(self, reason: str) -> None:
        if self.paused is None:
            self._next_probe_at = time.monotonic() + self._paused_backoff
            event(
                log,
                "delivery.paused",
                level=logging.ERROR,
                reason=reason,
                hint="fix the SMTP settings; nothing is lost and no attempt is counted",
            )
        self.paused = reason

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                if self._blocked():
                    # on schedule only: new mail wakes the loop, and must not trigger a probe
                    if time.monotonic() >= self._next_probe_at:
                        await asyncio.wait([self._start_probe()])
                else:
                    await self._claim_due_work()
                    await self._housekeeping()
                    self._store_back()
                self._mailer.close_idle()
            except StoreUnavailable as exc:
                self._store_away(str(exc))
            except Exception:
                log.exception("worker.error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._pause_between_polls())

    def _store_away(self, reason: str) -> None:
        """The database cannot serve us: say so once, and keep polling (each poll is one try,
        ended within DATABASE_TIMEOUT) until it can."""
        if self.store_unavailable is None:
            event(log, "worker.store_unavailable", level=logging.WARNING, reason=reason)
        self.store_unavailable = reason

    def _store_back(self) -> None:
        if self.store_unavailable is not None:
            event(log, "worker.store_available")
        self.store_unavailable = None

    def _blocked(self) -> bool:
        return not self.checked or self.paused is not None or self.unreachable is not None

    def _pause_between_polls(self) -> float:
        if self._blocked():
            return max(self._next_probe_at - time.monotonic(), 0.0)
        return self._settings.poll_interval

    def _first_paused_backoff(self) -> float:
        first = max(self._settings.retry_base_seconds, self._settings.poll_interval)
        return min(first, _PAUSED_PROBE_MAX_SECONDS)

    def _unreachable_interval(self) -> float:
        # a refused connection costs the server little: look often, resume soon
        return min(max(self._settings.poll_interval * 2, 1.0), 5.0)

    async def _claim_due_work(self) -> None:
        wanted = self._free_slots
        if wanted == 0:
            return
        self._free_slots -= wanted  # reserve before awaiting, so deliver_now cannot take them
        try:
            batch = await self._store.claim_due(
                limit=wanted, lease_seconds=self._settings.lease_seconds
            )
        finally:
            self._free_slots += wanted
        for notification in batch:
            self._free_slots -= 1
            task = asyncio.create_task(self._attempt(notification))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._free_slots += 1
        self._wake.set()

    async def _housekeeping(self) -> None:
        """Forget idempotency keys past their TTL, every few minutes."""
        if time.monotonic() - self._cleaned_at >= _HOUSEKEEPING_SECONDS:
            self._cleaned_at = time.monotonic()
            await self._store.forget_idempotency_keys(
                older_than=time.time() - self._settings.idempotency_ttl
            )

    def refresh_smtp_state(self) -> None:
        """Readiness wants news of the SMTP server: probe in the background, unless one began
        or a delivery reached the server within SMTP_PROBE_INTERVAL, or delivery waits (the
        loop then probes on its own schedule). Never more than one probe at a time."""
        interval = self._settings.smtp_probe_interval
        if self._stopping or self._blocked() or time.monotonic() - self._probed_at < interval:
            return
        last_ok = self._mailer.contact.ok_at
        if last_ok is not None and time.time() - last_ok < interval:
            return
        self._start_probe()

    def _start_probe(self) -> asyncio.Task[None]:
        if self._probe_task is None or self._probe_task.done():
            self._probed_at = time.monotonic()
            self._probe_task = asyncio.create_task(self._probe(), name="smtp-probe")
        return self._probe_task

    async def _probe(self) -> None:
        """Ask the SMTP server whether it takes us and act on the answer: pause on a settings
        fault (probing again later, less and less often), resume once it takes us."""
        wait = self._unreachable_interval()
        try:
            await self._mailer.probe()
        except SmtpConfigError as exc:
            self._pause(str(exc))
            self.unreachable = None
            wait = self._paused_backoff
            self._paused_backoff = min(wait * 2, _PAUSED_PROBE_MAX_SECONDS)
        except DeliveryError as exc:
            if self.unreachable is not None:
                self.unreachable = str(exc)
            else:  # no answer says nothing about our settings: attempts go on (and defer)
                self._resume()
        except Exception:
            log.exception("smtp.probe_crashed")
        else:
            self._resume()
        finally:
            self.checked = True
            self._next_probe_at = time.monotonic() + wait

    def _resume(self) -> None:
        self._paused_backoff = self._first_paused_backoff()
        if self.paused is not None or self.unreachable is not None:
            event(log, "delivery.resumed")
        self.paused = self.unreachable = None
        self._wake.set()
