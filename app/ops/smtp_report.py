"""How the SMTP server and delivery fare, in words for /readyz and numbers for /metrics, read
from what the mailer and the worker already know: reading it never opens a connection."""

from __future__ import annotations

from dataclasses import dataclass

from app.delivery.mailer import Mailer
from app.delivery.worker import Worker


@dataclass(frozen=True)
class SmtpReport:
    smtp: str  # "ok", or why the last contact failed
    delivery: str  # "ok", "paused: …", "waiting for the SMTP server: …" or "starting: …"
    last_contact: float | None  # epoch seconds of the last time the server took us
    paused: bool  # waiting for the SMTP settings (or the server's) to be fixed
    unreachable: bool  # waiting for the SMTP server to answer

    delivering: bool = True  # False: this process does not deliver (DELIVERY=off)
    # The same in one word each, for whoever may not see hosts, ports and server replies
    smtp_word: str = "ok"  # "ok", "failing", "unchecked" or "off"
    delivery_word: str = "ok"  # "ok", "paused", "waiting", "starting" or "off"

    @property
    def up(self) -> bool:
        return self.smtp == "ok"

    @property
    def healthy(self) -> bool:
        """Nothing to report: delivery runs, or runs elsewhere."""
        return not self.delivering or self.smtp == self.delivery == "ok"


OFF = SmtpReport(
    smtp="not checked by this process (DELIVERY=off)",
    delivery="off: worker processes deliver (DELIVERY=off)",
    last_contact=None,
    paused=False,
    unreachable=False,
    delivering=False,
    smtp_word="off",
    delivery_word="off",
)


def smtp_report(worker: Worker | None, mailer: Mailer | None) -> SmtpReport:
    if worker is None or mailer is None:
        return OFF
    contact = mailer.contact
    problem = worker.paused or worker.unreachable or contact.problem
    smtp_word = "ok" if problem is None else "failing"
    if problem is None and contact.ok_at is None:
        problem, smtp_word = "not checked yet", "unchecked"
    if worker.paused is not None:
        delivery, delivery_word = f"paused: {worker.paused}", "paused"
    elif worker.unreachable is not None:
        delivery = f"waiting for the SMTP server: {worker.unreachable}"
        delivery_word = "waiting"
    elif not worker.checked:
        delivery, delivery_word = "starting: checking the SMTP server", "starting"
    else:
        delivery = delivery_word = "ok"
    return SmtpReport(
        smtp=problem or "ok",
        delivery=delivery,
        last_contact=contact.ok_at,
        paused=worker.paused is not None,
        unreachable=worker.unreachable is not None,
        smtp_word=smtp_word,
        delivery_word=delivery_word,
    )
