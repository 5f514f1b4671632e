"""Accepting work: idempotency, scheduling, cancelling, listing, batches, back-pressure."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.settings import Settings
from bench.processes import free_port
from tests.conftest import BOTH_BACKENDS, WELCOME, count_rows, make_settings, wait_for
from tests.live import read, running, service_env, uvicorn_command
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, attempted, reaches, service, shown


def rfc3339(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).isoformat()


@BOTH_BACKENDS
async def test_same_idempotency_key_sequentially_gives_one_id_and_one_mail(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    headers = {"Idempotency-Key": "order-42-welcome"}
    first = await client.post("/v1/notifications", json=WELCOME, headers=headers)
    again = await client.post("/v1/notifications", json=WELCOME, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    await reaches(client, first.headers["location"], "sent")
    assert len(smtp.messages) == 1


@BOTH_BACKENDS
async def test_same_idempotency_key_ten_at_once_gives_one_id_and_one_mail(
    client: httpx.AsyncClient, smtp: SmtpServer, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/v1/notifications", json=WELCOME, headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    await reaches(client, responses[0].headers["location"], "sent")
    assert len(smtp.messages) == 1
    assert await count_rows(settings.database_url, "notifications") == 1


@BOTH_BACKENDS
async def test_same_idempotency_key_with_another_body_is_422_naming_the_header(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "k1"}
    assert (await client.post("/v1/notifications", json=WELCOME, headers=headers)).is_success
    other = {**WELCOME, "to": ["someone-else@example.com"]}
    response = await client.post("/v1/notifications", json=other, headers=headers)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert "different request" in error["msg"]


@BOTH_BACKENDS
async def test_idempotency_keys_are_scoped_per_api_key(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    keys = "alpha-key-1,beta-key-2"
    async with service(tmp_path, smtp, api_keys=keys, database_url=database_url) as client:
        ids = set()
        for key in ("alpha-key-1", "beta-key-2"):
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "shared"}
            response = await client.post("/v1/notifications", json=WELCOME, headers=headers)
            ids.add(response.json()["id"])
    assert len(ids) == 2


@BOTH_BACKENDS
async def test_an_expired_idempotency_key_starts_afresh(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    headers = {"Idempotency-Key": "short-lived"}
    async with service(tmp_path, smtp, idempotency_ttl=0.2, database_url=database_url) as client:
        first = await client.post("/v1/notifications", json=WELCOME, headers=headers)

        async def expired() -> bool:
            again = await client.post("/v1/notifications", json=WELCOME, headers=headers)
            return bool(again.json()["id"] != first.json()["id"])

        await wait_for(expired)  # after the TTL the same key makes a new notification
    assert await count_rows(database_url, "idempotency_keys") == 1


async def test_idempotency_key_longer_than_255_is_422(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k" * 256}
    response = await client.post("/v1/notifications", json=WELCOME, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


@BOTH_BACKENDS
async def test_scheduled_notification_is_sent_at_its_time_not_before(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    send_at = time.time() + 2
    request = {**WELCOME, "send_at": datetime.fromtimestamp(send_at, UTC).isoformat()}
    response = await client.post("/v1/notifications", json=request)
    assert response.json()["status"] == "scheduled"
    location = response.headers["location"]
    assert (await shown(client, location))["next_attempt_at"] is not None

    await reaches(client, location, "sent")
    assert send_at <= smtp.messages[0].at <= send_at + 2


@BOTH_BACKENDS
async def test_cancelled_before_its_time_is_never_sent(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    cancelled = await accept(client, {**WELCOME, "send_at": rfc3339(1)})
    later = await accept(client, {**WELCOME, "send_at": rfc3339(1.2), "to": ["bo@example.com"]})
    response = await client.post(f"{cancelled}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    await reaches(client, later, "sent")  # the cancelled one was due before it
    assert [m.rcpt_tos for m in smtp.messages] == [["bo@example.com"]]
    assert (await shown(client, cancelled))["status"] == "cancelled"


@BOTH_BACKENDS
async def test_cancel_of_a_sent_notification_is_409_and_unknown_404(
    client: httpx.AsyncClient,
) -> None:
    location = await accept(client)
    await reaches(client, location, "sent")
    response = await client.post(f"{location}/cancel")
    assert response.status_code == 409
    assert "is sent" in response.json()["detail"]
    assert (await client.post("/v1/notifications/nope/cancel")).status_code == 404


@BOTH_BACKENDS
async def test_deferred_notification_can_be_cancelled(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.replies["MAIL"] = "451 later"
    retry = {"retry_base_seconds": 5, "retry_max_seconds": 5}
    async with service(tmp_path, smtp, database_url=database_url, **retry) as client:
        location = await accept(client)
        await attempted(client, location)
        assert (await client.post(f"{location}/cancel")).json()["status"] == "cancelled"


async def test_send_at_in_the_past_is_sent_now_and_without_timezone_is_422(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/notifications", json={**WELCOME, "send_at": rfc3339(-60)})
    assert response.json()["status"] == "queued"
    await reaches(client, response.headers["location"], "sent")

    naive = {**WELCOME, "send_at": "2030-01-01T09:00:00"}
    response = await client.post("/v1/notifications", json=naive)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "send_at"]


@BOTH_BACKENDS
async def test_list_filters_by_status_tag_and_time_and_pages_with_a_cursor(
    client: httpx.AsyncClient,
) -> None:
    start = datetime.now(UTC).isoformat()
    tagged = [await accept(client, {**WELCOME, "tags": ["promo"]}) for _ in range(3)]
    await accept(client, {**WELCOME, "send_at": rfc3339(3600)})
    for location in tagged:
        await reaches(client, location, "sent")

    async def page(**params: Any) -> dict[str, Any]:
        response = await client.get("/v1/notifications", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert len((await page())["items"]) == 4
    assert [n["status"] for n in (await page(status="scheduled"))["items"]] == ["scheduled"]
    promo = await page(tag="promo")
    assert {f"/v1/notifications/{n['id']}" for n in promo["items"]} == set(tagged)
    assert (await page(created_before=start))["items"] == []

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = await page(**params)
        seen += [n["id"] for n in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 4
    created = [n["created_at"] for n in (await page())["items"]]
    assert created == sorted(created, reverse=True)

    bad = await client.get("/v1/notifications", params={"cursor": "garbage"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]


@BOTH_BACKENDS
async def test_list_filters_by_template_and_recipient_address(client: httpx.AsyncClient) -> None:
    ada = await accept(client, {**WELCOME, "to": ["Ada <ada@example.com>"]})
    bob = await accept(client, {**WELCOME, "to": ["x@example.com"], "bcc": ["bob@example.com"]})
    reset: dict[str, Any] = {"template": "password_reset", "to": ["bob@example.com"]}
    reset["context"] = {
        "name": "Bob",
        "reset_url": "https://example.com/r",
        "expires_in_minutes": 30,
    }
    other = await accept(client, reset)

    async def ids(**params: str) -> list[str]:
        response = await client.get("/v1/notifications", params=params)
        assert response.status_code == 200, response.text
        return [f"/v1/notifications/{n['id']}" for n in response.json()["items"]]

    assert await ids(template="password_reset") == [other]
    assert await ids(recipient="bob@example.com") == [other, bob]
    assert await ids(recipient="BOB@Example.com", template="welcome") == [bob]
    assert await ids(recipient=" ada@EXAMPLE.COM ") == [ada]
    for bad in ("ada", "@example.com", "ada@"):
        refused = await client.get("/v1/notifications", params={"recipient": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["detail"][0]["loc"] == ["query", "recipient"]


@BOTH_BACKENDS
async def test_batch_of_500_accepts_the_valid_and_reports_the_invalid_by_index(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    invalid: dict[int, dict[str, Any]] = {
        7: {"to": ["nope"]},
        123: {"template": "missing"},
        499: {"context": {}},
    }
    batch = [{**WELCOME, "to": [f"user{i}@example.com"], **invalid.get(i, {})} for i in range(500)]
    settings = {"delivery_concurrency": 16, "database_url": database_url}
    async with service(tmp_path, smtp, **settings) as client:
        response = await client.post("/v1/notifications/batch", json={"notifications": batch})
        assert response.status_code == 202
        body = response.json()
        assert (body["accepted"], body["refused"]) == (497, 3)
        errors = {item["index"]: item["error"] for item in body["items"] if item["error"]}
        assert set(errors) == set(invalid)
        assert errors[7][0]["loc"] == ["to", 0]
        assert errors[123][0]["loc"] == ["template"]
        assert "action_url" in errors[499][0]["msg"]
        await wait_for(lambda: len(smtp.messages) == 497, within=30)
    received = {m.rcpt_tos[0] for m in smtp.messages}
    assert received == {f"user{i}@example.com" for i in range(500) if i not in invalid}


async def test_batch_with_nothing_valid_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/notifications/batch", json={"notifications": [{"to": []}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "notifications", 0]


async def test_locked_database_at_accept_is_503_not_202(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp, database_busy_timeout=0.1) as client:
        settings = make_settings(tmp_path, smtp.port)
        blocker = sqlite3.connect(settings.database_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = await client.post("/v1/notifications", json=WELCOME)
        finally:
            blocker.rollback()
            blocker.close()
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert (await client.post("/v1/notifications", json=WELCOME)).status_code == 202


async def test_above_the_high_water_mark_new_work_gets_503(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    await smtp.stop()
    async with service(tmp_path, smtp, queue_high_water=3) as client:
        responses = [await client.post("/v1/notifications", json=WELCOME) for _ in range(8)]
    codes = [r.status_code for r in responses]
    # the waiting count is refreshed while requests commit, so the edge may move by one
    assert codes.count(202) in (2, 3) and set(codes[3:]) == {503}, codes
    refused = responses[-1]
    assert refused.headers["retry-after"]
    assert "QUEUE_HIGH_WATER" in refused.json()["detail"]


async def test_send_at_further_ahead_than_max_schedule_ahead_is_422_naming_both(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    month = settings.max_schedule_ahead
    assert month == 30 * 86400
    inside = await client.post(
        "/v1/notifications", json={**WELCOME, "send_at": rfc3339(month - 60)}
    )
    assert inside.status_code == 202 and inside.json()["status"] == "scheduled"
    beyond = await client.post(
        "/v1/notifications", json={**WELCOME, "send_at": rfc3339(month + 60)}
    )
    assert beyond.status_code == 422
    error = beyond.json()["detail"][0]
    assert error["loc"] == ["body", "send_at"] and "MAX_SCHEDULE_AHEAD" in error["msg"]
    assert "2592000 s (30 days)" in error["msg"]


OUTSIDE_UTC_YEARS = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("send_at", OUTSIDE_UTC_YEARS)
async def test_send_at_outside_the_utc_years_is_422_and_every_read_still_works(
    client: httpx.AsyncClient, settings: Settings, send_at: str
) -> None:
    response = await client.post("/v1/notifications", json={**WELCOME, "send_at": send_at})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "send_at"]
    batch = {"notifications": [{**WELCOME, "send_at": send_at}, WELCOME]}
    response = await client.post("/v1/notifications/batch", json=batch)
    assert response.status_code == 202
    refused, accepted = response.json()["items"]
    assert refused["error"][0]["loc"] == ["send_at"] and accepted["status"] == "queued"
    listed = await client.get("/v1/notifications")
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(moment=st.datetimes(timezones=offsets))
@example(moment=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))))
@example(moment=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))
@example(moment=datetime.now(UTC) + timedelta(days=29, hours=23))
async def test_any_send_at_is_accepted_and_readable_or_422_never_500(
    client: httpx.AsyncClient, moment: datetime
) -> None:
    response = await client.post(
        "/v1/notifications", json={**WELCOME, "send_at": moment.isoformat()}
    )
    if response.status_code == 422:
        assert response.json()["detail"][0]["loc"] == ["body", "send_at"]
        return
    assert response.status_code == 202, response.text
    assert (await client.get(response.headers["location"])).status_code == 200
    assert (await client.get("/v1/notifications", params={"limit": 1})).status_code == 200


async def test_items_that_are_not_objects_are_refused_by_index_and_the_others_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    batch: dict[str, list[Any]] = {"notifications": ["x", None, 5, [], WELCOME, True]}
    response = await client.post("/v1/notifications/batch", json=batch)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (1, 5)
    refused = {item["index"]: item["error"] for item in body["items"] if item["error"]}
    assert set(refused) == {0, 1, 2, 3, 5}
    assert all(
        errors[0]["loc"] == [] and errors[0]["type"] == "model_type" for errors in refused.values()
    )
    with sqlite3.connect(settings.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0] == 1


async def http_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response off a raw keep-alive connection (ours all carry Content-Length)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    return status, await reader.readexactly(length)


def http_request(method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + data


async def test_a_locked_database_in_the_background_hand_off_keeps_the_connection(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """The 202 goes out, then the accepting request's background task claims the
    notification; with the database locked just then, the connection must still answer its
    next request, and the worker loop sends the notification once the lock is gone."""
    port = free_port()
    env = service_env(tmp_path, smtp.port, DATABASE_BUSY_TIMEOUT="0.2")
    log = tmp_path / "log"
    async with running(uvicorn_command(port), env=env, port=port, log=log) as live:
        # ~600 KB of list to hold the connection's writes back while the client does not read
        bulky = {
            **WELCOME,
            "send_at": rfc3339(3600),
            "metadata": {f"k{i}": "x" * 500 for i in range(50)},
        }
        batch = await live.client.post(
            "/v1/notifications/batch", json={"notifications": [bulky] * 24}
        )
        assert batch.json()["accepted"] == 24

        connection = socket.socket()
        # small segments and window: the kernel then buffers only some 50 KB of what the
        # server writes (with loopback's 64 KB segments it would take megabytes)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.setblocking(False)
        await asyncio.get_running_loop().sock_connect(connection, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=connection, limit=1024)
        try:
            # Pipelined: the POST is handled once the list is written out, and its 202 waits
            # until the client reads; only then does its background task claim the row.
            writer.write(http_request("GET", "/v1/notifications?limit=200"))
            writer.write(http_request("POST", "/v1/notifications", WELCOME))
            await writer.drain()
            database = tmp_path / "live.db"

            def stored() -> bool:
                with sqlite3.connect(database) as db:
                    found = db.execute("SELECT 1 FROM notifications WHERE status != 'scheduled'")
                    row = found.fetchone()
                db.close()
                return row is not None

            await wait_for(stored)
            blocker = sqlite3.connect(database, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                assert (await http_response(reader))[0] == 200
                status, body = await http_response(reader)
                assert status == 202
                location = f"/v1/notifications/{json.loads(body)['id']}"

                def hand_off_failed() -> bool:
                    text = read(log)
                    return "notification.handoff_failed" in text or "Exception in ASGI" in text

                await wait_for(hand_off_failed)
                writer.write(http_request("GET", "/healthz"))
                await writer.drain()
                assert await asyncio.wait_for(http_response(reader), 5) == (200, b'{"status":"ok"}')
            finally:
                blocker.rollback()
                blocker.close()
        finally:
            writer.close()
        done = await reaches(live.client, location, "sent", within=15)
    assert smtp.copies() == {done["message_id"]: 1}
