"""Found by trying webhooks as a newcomer would: what a receiver was told that the API showed
otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, reaches
from tests.test_webhooks import SECRET, hooked, hooked_service, receiver  # noqa: F401
from tests.webhook_receiver import Receiver


@pytest.mark.xfail(
    strict=True,
    reason="the event's notification.attempts is the attempt count of the current budget,"
    " which a retry or replay resets to 0, while the README says it is the number of"
    " attempts GET shows (its `attempts` list keeps every attempt)",
)
async def test_the_event_after_a_retry_counts_every_attempt_as_get_shows_them(
    tmp_path: Path,
    smtp: SmtpServer,
    receiver: Receiver,  # noqa: F811
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
    assert len(view["attempts"]) == 2
    assert sent["attempts"] == len(view["attempts"])
