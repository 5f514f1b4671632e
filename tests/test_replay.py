"""Bulk replay against a real SMTP server, on both databases: failed notifications matching a
filter are queued again (same Message-ID, a new attempt budget), a page per call; a dry run
changes nothing; each caller replays its own."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import BOTH_BACKENDS, WELCOME, wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import service
from tests.test_ownership import BILLING, KEYS, KEYS_FILE, OPS, WEB

REPLAY = "/v1/notifications/replay"


async def accept_all(
    client: httpx.AsyncClient, request: dict[str, Any], count: int, **headers: str
) -> list[str]:
    ids = []
    for _ in range(count):
        response = await client.post("/v1/notifications", json=request, headers=headers)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def statuses(client: httpx.AsyncClient, ids: list[str], **headers: str) -> list[str]:
    return [
        (await client.get(f"/v1/notifications/{i}", headers=headers)).json()["status"] for i in ids
    ]


async def all_reach(
    client: httpx.AsyncClient, ids: list[str], status: str, **headers: str
) -> list[dict[str, Any]]:
    async def done() -> bool:
        return await statuses(client, ids, **headers) == [status] * len(ids)

    await wait_for(done, within=20)
    return [(await client.get(f"/v1/notifications/{i}", headers=headers)).json() for i in ids]


@BOTH_BACKENDS
async def test_ten_failed_by_a_554_are_replayed_once_the_server_is_fixed(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.replies["DATA"] = "554 5.6.0 message rejected"
    async with service(tmp_path, smtp, database_url=database_url) as client:
        ids = await accept_all(client, {**WELCOME, "tags": ["spring"]}, 10)
        other = await accept_all(client, WELCOME, 1)  # failed too, but outside the filter
        failed = await all_reach(client, ids + other, "failed")
        message_ids = [n["message_id"] for n in failed[:10]]
        attempts = len(smtp.connected_at)
        smtp.behaviour.replies.clear()

        request = {"filter": {"tag": "spring", "error_contains": "554"}, "limit": 4}
        dry = await client.post(REPLAY, json={**request, "dry_run": True, "limit": 500})
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True
        assert (dry.json()["count"], sorted(dry.json()["ids"])) == (10, sorted(ids))
        assert await statuses(client, ids + other) == ["failed"] * 11
        assert smtp.messages == [] and len(smtp.connected_at) == attempts

        replayed: list[str] = []
        cursor = None
        while True:
            response = await client.post(REPLAY, json={**request, "cursor": cursor})
            assert response.status_code == 200, response.text
            page = response.json()
            assert page["count"] == len(page["ids"]) <= 4
            replayed += page["ids"]
            if (cursor := page["next_cursor"]) is None:
                break
        assert sorted(replayed) == sorted(ids)
        sent = await all_reach(client, ids, "sent")
        assert await statuses(client, other) == ["failed"]
        # again: nothing failed is left to match
        assert (await client.post(REPLAY, json=request)).json()["count"] == 0
    assert [n["message_id"] for n in sent] == message_ids
    assert sorted(smtp.copies().values()) == [1] * 10
    assert set(smtp.copies()) == set(message_ids)
    assert all(n["attempts"][-1]["outcome"] == "sent" for n in sent)


async def test_filters_by_template_and_time(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.replies["DATA"] = "554 5.6.0 message rejected"
    async with service(tmp_path, smtp) as client:
        [early] = await accept_all(client, WELCOME, 1)
        await all_reach(client, [early], "failed")
        shown = (await client.get(f"/v1/notifications/{early}")).json()["created_at"]
        # a moment before it: the time shown is rounded to the microsecond, maybe upwards
        created = (datetime.fromisoformat(shown) - timedelta(milliseconds=1)).isoformat()
        [late] = await accept_all(client, WELCOME, 1)
        await all_reach(client, [late], "failed")
        dry = {"dry_run": True}

        async def ids(**filter_: Any) -> list[str]:
            response = await client.post(REPLAY, json={"filter": filter_, **dry})
            assert response.status_code == 200, response.text
            return list(response.json()["ids"])

        assert await ids(template="welcome") == [late, early]  # newest first
        assert await ids(template="password_reset") == []
        assert await ids(created_before=created) == []
        assert await ids(created_after=created) == [late, early]
        assert await ids(error_contains="rejected") == [late, early]
        assert await ids(error_contains="451") == []


@BOTH_BACKENDS
async def test_each_caller_replays_its_own_and_an_admin_every_ones(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(KEYS_FILE)
    settings = {"api_keys": KEYS, "api_keys_file": str(keys_file), "database_url": database_url}
    smtp.behaviour.replies["DATA"] = "554 5.6.0 message rejected"
    async with service(tmp_path, smtp, **settings) as client:
        web = await accept_all(client, WELCOME, 2, **WEB)
        billing = await accept_all(client, WELCOME, 2, **BILLING)
        await all_reach(client, web, "failed", **WEB)
        await all_reach(client, billing, "failed", **BILLING)
        smtp.behaviour.replies.clear()
        mine = await client.post(REPLAY, json={"dry_run": True}, headers=WEB)
        assert sorted(mine.json()["ids"]) == sorted(web)
        everyone = await client.post(REPLAY, json={"dry_run": True}, headers=OPS)
        assert sorted(everyone.json()["ids"]) == sorted(web + billing)
        done = await client.post(REPLAY, json={}, headers=BILLING)
        assert sorted(done.json()["ids"]) == sorted(billing)
        await all_reach(client, billing, "sent", **BILLING)
        assert await statuses(client, web, **WEB) == ["failed", "failed"]


async def test_replay_is_not_taken_for_a_notification_id(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp) as client:
        assert (await client.post(REPLAY, json={})).json() == {
            "count": 0,
            "ids": [],
            "next_cursor": None,
            "dry_run": False,
        }
        shown = await client.get(REPLAY)  # GET of the path is a notification's, unknown
        assert shown.status_code == 404


async def test_bad_input_is_a_422_naming_the_field(tmp_path: Path, smtp: SmtpServer) -> None:
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"limit": 0}, ["body", "limit"]),
        ({"limit": 1001}, ["body", "limit"]),
        ({"cursor": "nope"}, ["body", "cursor"]),
        ({"dry_run": "maybe"}, ["body", "dry_run"]),
        ({"filter": {"status": "sent"}}, ["body", "filter", "status"]),
        ({"filter": {"template": "../x"}}, ["body", "filter", "template"]),
        ({"filter": {"created_after": "yesterday"}}, ["body", "filter", "created_after"]),
        ({"filter": {"error_contains": ""}}, ["body", "filter", "error_contains"]),
        ({"force": True}, ["body", "force"]),
    ]
    async with service(tmp_path, smtp) as client:
        for body, loc in cases:
            response = await client.post(REPLAY, json=body)
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == loc, response.text


@hypothesis_settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["filter", "dry_run", "limit", "cursor"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    ),
    filter_=st.dictionaries(
        st.sampled_from(
            ["template", "tag", "created_after", "created_before", "error_contains", "x"]
        ),
        st.none() | st.integers() | st.text(max_size=30),
    ),
)
async def test_any_replay_request_is_answered_without_a_500(
    client: httpx.AsyncClient, body: dict[str, Any], filter_: dict[str, Any]
) -> None:
    for request in (body, {"filter": filter_, "dry_run": True}):
        response = await client.post(REPLAY, json=request)
        assert response.status_code in (200, 422), response.text
