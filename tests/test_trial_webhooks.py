"""Found by trying webhooks as a newcomer would: what a receiver was told that the API showed
otherwise."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, reaches
from tests.test_webhooks import hooked, hooked_service
from tests.webhook_receiver import Receiver


async def test_the_event_after_a_retry_counts_the_attempts_since_the_retry(
    tmp_path: Path,
    smtp: SmtpServer,
    receiver: Receiver,
) -> None:
    smtp.behaviour.refuse["ada@example.com"] = "550 5.1.1 <ada@example.com>: no such user"
    async with hooked_service(tmp_path, smtp, receiver) as client:
        location = await accept(client, hooked(receiver))
        await reaches(client, location, "failed")
        del smtp.behaviour.refuse["ada@example.com"]
        assert (await client.post(f"{location}/retry")).status_code == 202
        view = await reaches(client, location, "sent")
        await wait_for(lambda: len(receiver.delivered) >= 2)
    failed, sent = (hit.event["notification"] for hit in receiver.delivered)
    assert (failed["status"], sent["status"]) == ("failed", "sent")
    assert len(view["attempts"]) == 2  # GET keeps every attempt
    assert (failed["attempts"], sent["attempts"]) == (1, 1)  # as the README says: since the retry
