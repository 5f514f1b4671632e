"""A batch's callback_urls: each URL checked once, and all of them within the batch's budget,
so that a batch of unresolvable hosts is not a request of 2 s per item."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.callbacks import BatchCallbacks
from app.api.callers import Caller
from app.api.schemas import NotificationRequest
from app.errors import InvalidRequest
from app.webhooks.resolver import WebhookResolver
from tests.conftest import WELCOME, make_settings
from tests.test_webhooks import SECRET

ALLOWED = "http://127.0.0.1:9/hook"


def request(url: str) -> NotificationRequest:
    return NotificationRequest.model_validate({**WELCOME, "callback_url": url})


async def test_past_its_budget_a_batch_refuses_urls_not_checked_yet_and_reuses_the_others(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, 25, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1:9,127.0.0.1:10"
    )
    now = [0.0]
    callbacks = BatchCallbacks(
        caller=Caller("web"),
        settings=settings,
        resolver=WebhookResolver(),
        budget=5.0,
        clock=lambda: now[0],
    )
    first = request(ALLOWED)
    await callbacks.settle(first)
    assert first.callback_url == ALLOWED
    now[0] = 5.1  # the budget is checked before a URL not seen yet...
    with pytest.raises(InvalidRequest) as late:
        await callbacks.settle(request("http://127.0.0.1:10/hook"))
    assert late.value.loc == ("body", "callback_url")
    assert "send this notification again" in late.value.msg
    again = request(ALLOWED)
    await callbacks.settle(again)  # ...a URL checked before is settled whatever the time
    assert again.callback_url == ALLOWED


async def test_a_refused_url_is_refused_for_every_item_that_names_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, 25, webhook_secret=SECRET)
    callbacks = BatchCallbacks(caller=Caller("web"), settings=settings, resolver=WebhookResolver())
    refusals = []
    for _ in range(3):
        with pytest.raises(InvalidRequest) as refused:
            await callbacks.settle(request("https://10.0.0.1/hook"))
        refusals.append(refused.value.msg)
    assert len(set(refusals)) == 1 and "private" in refusals[0]
