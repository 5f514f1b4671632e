"""Prometheus metrics, in a registry of the app's own (so two apps in one process never mix).

Counters are per process: with several uvicorn workers, scrape each or sum them. The
per-status gauge is read from the database at scrape time, so it is the same in every worker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.api.schemas import Status

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        by_notification = ["template", "caller"]
        self.accepted = Counter(
            "notifier_notifications_accepted",
            "Notifications accepted (answered 202).",
            by_notification,
            registry=self.registry,
        )
        self.outcomes = {
            status: Counter(
                f"notifier_notifications_{status}",
                f"Delivery attempts that left a notification {status}.",
                by_notification,
                registry=self.registry,
            )
            for status in (Status.SENT, Status.DEFERRED, Status.FAILED, Status.SUPPRESSED)
        }
        self.delivery_latency = Histogram(
            "notifier_delivery_latency_seconds",
            "Seconds from acceptance to sent.",
            ["template"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.smtp_attempts = Counter(
            "notifier_smtp_attempts",
            "SMTP attempts by reply class: 2xx, 4xx, 5xx, or 'connection' when no reply came.",
            ["result"],
            registry=self.registry,
        )
        self.notifications = Gauge(
            "notifier_notifications",
            "Notifications in the database, by status.",
            ["status"],
            registry=self.registry,
        )
        self.smtp_up = Gauge(
            "notifier_smtp_up",
            "1 when the last contact with the SMTP server (a delivery or a probe) worked.",
            registry=self.registry,
        )
        self.smtp_last_contact = Gauge(
            "notifier_smtp_last_contact_timestamp_seconds",
            "When the SMTP server last took us (Unix time; 0: not yet).",
            registry=self.registry,
        )
        self.delivery_paused = Gauge(
            "notifier_delivery_paused",
            "1 while delivery waits: for a fix of the SMTP settings (reason=settings) or for"
            " the SMTP server to answer (reason=unreachable).",
            ["reason"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "notifier_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        # never the key or the address as a label: both are unbounded (and one is a secret)
        self.auth_failures = Counter(
            "notifier_auth_failures",
            "Failed authentications (a wrong or missing API key or metrics token) by outcome:"
            " 'refused' (401) or 'throttled' (429, AUTH_FAILURE_LIMIT).",
            ["outcome"],
            registry=self.registry,
        )

    def outcome(
        self,
        status: Status,
        *,
        template: str,
        caller: str,
        smtp_result: str | None,
        latency: float | None,
    ) -> None:
        if counter := self.outcomes.get(status):
            counter.labels(template, caller).inc()
        if smtp_result is not None:
            self.smtp_attempts.labels(smtp_result).inc()
        if latency is not None:
            self.delivery_latency.labels(template).observe(latency)

    def smtp_state(
        self, *, up: bool, paused: bool, unreachable: bool, last_contact: float | None
    ) -> None:
        self.smtp_up.set(1 if up else 0)
        self.smtp_last_contact.set(last_contact or 0)
        self.delivery_paused.labels("settings").set(1 if paused else 0)
        self.delivery_paused.labels("unreachable").set(1 if unreachable else 0)

    def exposition(self, counts: dict[str, int]) -> bytes:
        for status in Status:
            self.notifications.labels(status.value).set(counts.get(status.value, 0))
        return generate_latest(self.registry)
