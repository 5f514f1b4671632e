"""Status webhooks end to end: the service (with its real delivery, a real SMTP server and
either database) POSTs signed events to a real receiver, retries those it refuses, keeps every
event owed while the receiver is down and delivers them in order once it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import BOTH_BACKENDS, WELCOME, wait_for
from tests.smtp_server import SmtpServer
from tests.test_accepting import rfc3339
from tests.test_delivery import accept, reaches, service
from tests.webhook_receiver import Receiver

SECRET = "whsec-test-0123456789abcdef"


@asynccontextmanager
async def hooked_service(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The service, allowed to call the receiver, with retries small enough for a test."""
    values: dict[str, Any] = {
        "webhook_allow_hosts": f"127.0.0.1:{receiver.port}",
        "webhook_secret": SECRET,
        "webhook_retry_base_seconds": 0.05,
        "webhook_retry_max_seconds": 0.2,
        "poll_interval": 0.05,
        **settings,
    }
    async with service(tmp_path, smtp, **values) as client:
        yield client


def hooked(receiver: Receiver, **request: Any) -> dict[str, Any]:
    return {**WELCOME, "callback_url": receiver.url, **request}


async def delivered_count(receiver: Receiver, count: int, within: float = 15) -> None:
    await wait_for(lambda: len(receiver.delivered) >= count, within=within)


@BOTH_BACKENDS
async def test_an_event_refused_twice_arrives_on_the_third_try_signed_and_as_the_api_shows_it(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver, database_url: str
) -> None:
    receiver.behaviour.fail_first = 2
    async with hooked_service(tmp_path, smtp, receiver, database_url=database_url) as client:
        location = await accept(client, hooked(receiver, tags=["welcome"], metadata={"u": "7"}))
        view = await reaches(client, location, "sent")
        await delivered_count(receiver, 1)
        events = (await client.get(f"{location}/events")).json()["items"]
    assert [hit.answered for hit in receiver.hits] == [500, 500, 204]
    (hit,) = receiver.delivered
    assert hit.path == "/hooks/notifier"
    assert hit.headers["content-type"] == "application/json"
    assert hit.verifies(SECRET)
    assert not hit.verifies("another-secret-entirely")
    # every try carries the same event, byte for byte: the receiver de-duplicates by its id
    assert len({h.body for h in receiver.hits}) == 1
    body = hit.event
    assert hit.headers["notifier-event-id"] == body["id"]
    assert body["type"] == "notification.sent"
    assert body["created_at"].endswith("Z")
    assert body["notification"] == {
        "id": view["id"],
        "status": view["status"],
        "template": view["template"],
        "recipients": view["recipients_status"],
        "attempts": len(view["attempts"]),
        "last_error": view["last_error"],
        "message_id": view["message_id"],
        "tags": view["tags"],
        "metadata": view["metadata"],
    }
    (event,) = events
    assert event["id"] == body["id"] and event["status"] == "delivered"
    assert event["body"] == body and event["url"] == receiver.url
    assert [a["status_code"] for a in event["attempts"]] == [500, 500, 204]
    assert [a["error"] for a in event["attempts"]] == [
        "the receiver answered 500",
        "the receiver answered 500",
        None,
    ]
    assert event["delivered_at"] is not None and event["next_attempt_at"] is None


@BOTH_BACKENDS
async def test_a_receiver_down_for_a_while_gets_every_event_afterwards_in_order(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    down = Receiver()
    down.reserve_port()  # nothing listens there yet
    smtp.behaviour.replies["DATA"] = "451 4.3.0 try again later"
    async with hooked_service(
        tmp_path, smtp, down, database_url=database_url, max_attempts=3
    ) as client:
        locations = [await accept(client, hooked(down, metadata={"n": str(i)})) for i in range(5)]
        for location in locations:
            await reaches(client, location, "failed")

        async def refused_meanwhile() -> bool:
            first = (await client.get(f"{locations[-1]}/events")).json()["items"][0]
            return len(first["attempts"]) >= 2

        await wait_for(refused_meanwhile)
        await down.start()
        try:
            await delivered_count(down, 15)
            # every event delivered: none is pending any more
            for location in locations:
                events = (await client.get(f"{location}/events")).json()["items"]
                assert [e["status"] for e in events] == ["delivered"] * 3
        finally:
            await down.stop()
    events = [hit.event for hit in down.delivered]
    assert len({e["id"] for e in events}) == 15  # none twice, none lost
    ids = [location.rsplit("/", 1)[1] for location in locations]
    for notification_id in ids:
        told = [e["notification"] for e in events if e["notification"]["id"] == notification_id]
        assert [(n["status"], n["attempts"]) for n in told] == [
            ("deferred", 1),
            ("deferred", 2),
            ("failed", 3),
        ]


async def test_the_keys_callback_url_and_secrets_serve_requests_without_their_own(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    current, previous = "whsec-current-000000000000", "whsec-previous-11111111111"
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(
        '[[keys]]\nname = "billing"\nkey = "billing-secret-1"\n'
        f'callback_url = "{receiver.url}"\n'
        f'webhook_secret = ["{current}", "{previous}"]\n'
    )
    billing = {"Authorization": "Bearer billing-secret-1"}
    async with hooked_service(
        tmp_path, smtp, receiver, api_keys_file=keys_file, webhook_secret=None
    ) as client:
        later = {**WELCOME, "send_at": rfc3339(86400)}
        response = await client.post("/v1/notifications", json=later, headers=billing)
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        assert (await client.post(f"{location}/cancel", headers=billing)).status_code == 200
        await delivered_count(receiver, 1)
    (hit,) = receiver.delivered
    assert hit.event["type"] == "notification.cancelled"
    assert hit.event["notification"]["recipients"][0]["status"] == "cancelled"
    # during a rotation both secrets sign: a receiver holding either one verifies
    assert hit.headers["notifier-signature"].count(",v1=") == 2
    assert hit.verifies(current) and hit.verifies(previous)


async def test_events_are_shown_to_their_owner_only(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    keys = "billing:billing-secret-1,web:web-secret-2"
    billing = {"Authorization": "Bearer billing-secret-1"}
    web = {"Authorization": "Bearer web-secret-2"}
    async with hooked_service(tmp_path, smtp, receiver, api_keys=keys) as client:
        response = await client.post("/v1/notifications", json=hooked(receiver), headers=billing)
        location = response.headers["location"]
        await delivered_count(receiver, 1)
        mine = await client.get(f"{location}/events", headers=billing)
        theirs = await client.get(f"{location}/events", headers=web)
        unknown = await client.get("/v1/notifications/no-such-id/events", headers=billing)
    assert mine.status_code == 200 and len(mine.json()["items"]) == 1
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"].replace(location.rsplit("/", 1)[1], "<id>") == unknown.json()[
        "detail"
    ].replace("no-such-id", "<id>")


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    receiver.behaviour.status = 307
    receiver.behaviour.headers = {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}
    async with hooked_service(tmp_path, smtp, receiver) as client:
        location = await accept(client, hooked(receiver))

        async def tried_twice() -> bool:
            items = (await client.get(f"{location}/events")).json()["items"]
            return bool(items) and len(items[0]["attempts"]) >= 2

        await wait_for(tried_twice)
        (event,) = (await client.get(f"{location}/events")).json()["items"]
    assert event["status"] == "pending"
    assert "redirects are not followed" in event["attempts"][0]["error"]
    assert {hit.path for hit in receiver.hits} == {"/hooks/notifier"}


async def test_an_event_is_given_up_after_webhook_max_age_and_the_next_one_still_goes(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    receiver.behaviour.fail_first = 10**6  # always 500
    smtp.behaviour.replies["DATA"] = "451 4.3.0 try again later"
    async with hooked_service(
        tmp_path, smtp, receiver, webhook_max_age=0.5, max_attempts=2
    ) as client:
        location = await accept(client, hooked(receiver))
        await reaches(client, location, "failed")

        async def given_up() -> bool:
            items = (await client.get(f"{location}/events")).json()["items"]
            return [e["status"] for e in items] == ["failed", "failed"]

        await wait_for(given_up)
        events = (await client.get(f"{location}/events")).json()["items"]
    assert [e["type"] for e in events] == ["notification.deferred", "notification.failed"]
    for event in events:
        assert event["next_attempt_at"] is None and event["delivered_at"] is None
        assert event["last_error"] == "the receiver answered 500"
        gave_up_at = event["attempts"][-1]["at"]
        assert gave_up_at >= event["created_at"]


async def test_a_callback_url_without_a_secret_to_sign_with_is_422(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    async with hooked_service(tmp_path, smtp, receiver, webhook_secret=None) as client:
        response = await client.post("/v1/notifications", json=hooked(receiver))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "callback_url"]
    assert "WEBHOOK_SECRET" in error["msg"]


async def test_a_notification_without_callback_url_writes_no_event(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    async with hooked_service(tmp_path, smtp, receiver) as client:
        location = await accept(client)
        await reaches(client, location, "sent")
        events = await client.get(f"{location}/events")
    assert events.json() == {"items": []}
    assert receiver.hits == []
