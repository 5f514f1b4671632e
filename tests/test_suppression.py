"""The suppression list against a real SMTP server, on both databases: a hard bounce puts the
address on it, a suppressed recipient is skipped (and a notification whose every recipient is
skipped opens no SMTP connection), and the API lists, adds and removes entries per caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import BOTH_BACKENDS, WELCOME
from tests.smtp_server import SmtpServer
from tests.test_delivery import reaches, service
from tests.test_ownership import BILLING, KEYS, KEYS_FILE, OPS, WEB

NO_SUCH_USER = "550 5.1.1 no such user"
BOB = {**WELCOME, "to": ["bob@example.com"]}


async def accepted(client: httpx.AsyncClient, request: dict[str, Any], **headers: str) -> Any:
    response = await client.post("/v1/notifications", json=request, headers=headers)
    assert response.status_code == 202, response.text
    return response


async def entries(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Any:
    response = await client.get("/v1/suppressions", headers=headers or {})
    assert response.status_code == 200, response.text
    return [
        (e["caller"], e["address"], e["category"], e["reason"]) for e in response.json()["items"]
    ]


@BOTH_BACKENDS
async def test_a_550_511_suppresses_the_address_and_the_next_mail_to_it_opens_no_connection(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = NO_SUCH_USER
    async with service(tmp_path, smtp, database_url=database_url) as client:
        first = await accepted(client, BOB)
        assert first.json()["suppressed"] == []
        await reaches(client, first.headers["location"], "failed")
        assert await entries(client) == [("anonymous", "bob@example.com", None, "hard_bounce")]
        connections, rcpts = len(smtp.connected_at), len(smtp.recorder.rcpt_seen)

        second = await accepted(client, {**BOB, "to": ["Bob@Example.com"]})
        assert second.json()["suppressed"] == [
            {"email": "Bob@example.com", "reason": "hard_bounce"}
        ]
        done = await reaches(client, second.headers["location"], "suppressed")
        assert (len(smtp.connected_at), len(smtp.recorder.rcpt_seen)) == (connections, rcpts)
    assert done["recipients_status"] == [
        {
            "email": "Bob@example.com",
            "status": "suppressed",
            "code": None,
            "message": None,
            "reason": "hard_bounce",
        }
    ]
    [attempt] = done["attempts"]
    assert attempt["outcome"] == "suppressed" and attempt["smtp_code"] is None
    assert attempt["recipients"] == [
        {
            "email": "Bob@example.com",
            "outcome": "suppressed",
            "code": None,
            "message": "hard_bounce",
        }
    ]
    assert done["next_attempt_at"] is None and done["sent_at"] is None


async def test_the_others_still_get_it_when_one_recipient_is_suppressed(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    request = {**WELCOME, "to": ["ada@example.com", "bob@example.com"]}
    async with service(tmp_path, smtp) as client:
        put = await client.put("/v1/suppressions/bob@example.com", json={"reason": "complaint"})
        assert put.status_code == 201, put.text
        response = await accepted(client, request)
        assert response.json()["suppressed"] == [
            {"email": "bob@example.com", "reason": "complaint"}
        ]
        done = await reaches(client, response.headers["location"], "sent")
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.com"]]
    assert smtp.messages[0].message["To"] == "ada@example.com, bob@example.com"  # unchanged
    assert [(r["email"], r["status"], r["reason"]) for r in done["recipients_status"]] == [
        ("ada@example.com", "delivered", None),
        ("bob@example.com", "suppressed", "complaint"),
    ]


async def test_a_refusal_for_policy_is_not_a_hard_bounce(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.refuse["bob@example.com"] = "550 5.7.1 refused as spam"
    smtp.behaviour.refuse["cy@example.com"] = "553 mailbox name not allowed"
    request = {**WELCOME, "to": ["bob@example.com", "cy@example.com"]}
    async with service(tmp_path, smtp) as client:
        await reaches(client, (await accepted(client, request)).headers["location"], "failed")
        # no enhanced code: the basic one (553) decides
        assert await entries(client) == [("anonymous", "cy@example.com", None, "hard_bounce")]


async def test_hard_bounce_codes_off_keeps_the_list_as_it_is(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = NO_SUCH_USER
    async with service(tmp_path, smtp, hard_bounce_codes="off") as client:
        await reaches(client, (await accepted(client, BOB)).headers["location"], "failed")
        assert await entries(client) == []


async def test_an_unsubscribe_applies_to_its_category_a_hard_bounce_to_all(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp) as client:
        put = await client.put(
            "/v1/suppressions/ada@example.com",
            json={"reason": "unsubscribe", "category": "newsletter"},
        )
        assert put.status_code == 201, put.text
        news = await accepted(client, {**WELCOME, "category": "newsletter"})
        other = await accepted(client, {**WELCOME, "category": "billing"})
        plain = await accepted(client, WELCOME)
        await reaches(client, news.headers["location"], "suppressed")
        await reaches(client, other.headers["location"], "sent")
        await reaches(client, plain.headers["location"], "sent")
    assert len(smtp.messages) == 2


@BOTH_BACKENDS
async def test_each_caller_has_its_own_list_and_an_admin_sees_every_one(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(KEYS_FILE)
    settings = {"api_keys": KEYS, "api_keys_file": str(keys_file), "database_url": database_url}
    async with service(tmp_path, smtp, **settings) as client:
        path = "/v1/suppressions/ada@example.com"
        assert (await client.put(path, json={}, headers=WEB)).status_code == 201
        again = await client.put(path, json={"reason": "complaint"}, headers=WEB)
        assert again.status_code == 200
        assert again.json()["reason"] == "complaint" and again.json()["caller"] == "web"
        assert await entries(client, WEB) == [("web", "ada@example.com", None, "complaint")]
        assert await entries(client, BILLING) == []
        # billing's mail to ada still goes; web's does not
        billing = await accepted(client, WELCOME, **BILLING)
        assert billing.json()["suppressed"] == []
        web = await accepted(client, WELCOME, **WEB)
        await reaches_as(client, WEB, web.headers["location"], "suppressed")
        await reaches_as(client, BILLING, billing.headers["location"], "sent")

        put = await client.put(path, params={"caller": "billing"}, json={}, headers=OPS)
        assert put.status_code == 201 and put.json()["caller"] == "billing"
        assert len(await entries(client, OPS)) == 2
        refused = await client.get("/v1/suppressions", params={"caller": "web"}, headers=BILLING)
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        # another caller's entry is not there for billing to remove
        assert (await client.delete(path, headers=BILLING)).status_code == 204
        assert (await client.delete(path, headers=BILLING)).status_code == 404
        assert await entries(client, WEB) == [("web", "ada@example.com", None, "complaint")]
        assert (await client.delete(path, headers=OPS)).status_code == 204
        assert await entries(client, OPS) == []


async def reaches_as(
    client: httpx.AsyncClient, key: dict[str, str], location: str, status: str
) -> None:
    from tests.conftest import wait_for

    async def check() -> bool:
        return bool((await client.get(location, headers=key)).json()["status"] == status)

    await wait_for(check)


async def test_a_read_only_key_lists_but_cannot_change_the_list(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "reader"\nkey = "reader-secret-123"\nscopes = ["read"]\n')
    reader = {"Authorization": "Bearer reader-secret-123"}
    async with service(tmp_path, smtp, api_keys_file=str(keys)) as client:
        assert (await client.get("/v1/suppressions", headers=reader)).status_code == 200
        put = await client.put("/v1/suppressions/ada@example.com", json={}, headers=reader)
        assert put.status_code == 403 and "'send'" in put.json()["detail"]
        gone = await client.delete("/v1/suppressions/ada@example.com", headers=reader)
        assert gone.status_code == 403
        assert (await client.get("/v1/suppressions")).status_code == 401


async def test_removing_one_category_leaves_the_others(tmp_path: Path, smtp: SmtpServer) -> None:
    path = "/v1/suppressions/ada@example.com"
    async with service(tmp_path, smtp) as client:
        for category in ("newsletter", "digest", None):
            await client.put(path, json={"reason": "unsubscribe", "category": category})
        assert (await client.delete(path, params={"category": "digest"})).status_code == 204
        assert [e[2] for e in await entries(client)] == [None, "newsletter"]
        listed = await client.get("/v1/suppressions", params={"category": "newsletter"})
        assert [e["category"] for e in listed.json()["items"]] == ["newsletter"]
        assert (await client.delete(path)).status_code == 204
        assert await entries(client) == []


async def test_the_list_pages_with_its_cursor(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp) as client:
        for i in range(5):
            await client.put(f"/v1/suppressions/user{i}@example.com", json={})
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/suppressions", params=params)).json()
            seen += [e["address"] for e in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
    assert seen == [f"user{i}@example.com" for i in range(5)]


async def test_bad_input_is_a_4xx_naming_the_field(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp) as client:
        cases = [
            (client.put("/v1/suppressions/not-an-address", json={}), ["path", "address"]),
            (client.put("/v1/suppressions/Ada <ada@example.com>", json={}), ["path", "address"]),
            (
                client.put("/v1/suppressions/a@example.com", json={"reason": "x"}),
                ["body", "reason"],
            ),
            (
                client.put("/v1/suppressions/a@example.com", json={"category": "a b"}),
                ["body", "category"],
            ),
            (client.put("/v1/suppressions/a@example.com", json={"why": 1}), ["body", "why"]),
            (client.delete("/v1/suppressions/nobody"), ["path", "address"]),
            (client.delete("/v1/suppressions/a@example.com"), ["path", "address"]),  # 404
            (client.get("/v1/suppressions", params={"cursor": "nope"}), ["query", "cursor"]),
            (client.get("/v1/suppressions", params={"reason": "x"}), ["query", "reason"]),
            (client.get("/v1/suppressions", params={"limit": 0}), ["query", "limit"]),
            (client.get("/v1/suppressions", params={"address": "x"}), ["query", "address"]),
            (
                client.post("/v1/notifications", json={**WELCOME, "category": "é"}),
                ["body", "category"],
            ),
        ]
        for call, loc in cases:
            response = await call
            assert 400 <= response.status_code < 500, response.text
            assert response.json()["detail"][0]["loc"] == loc, response.text


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    address=st.text(min_size=1, max_size=80),
    body=st.dictionaries(st.text(max_size=10), st.text(max_size=10) | st.none(), max_size=3),
)
async def test_any_address_body_or_cursor_is_answered_without_a_500(
    client: httpx.AsyncClient, address: str, body: dict[str, Any]
) -> None:
    path = f"/v1/suppressions/{quote(address, safe='')}"
    for response in (
        await client.put(path, json=body),
        await client.delete(path),
        await client.get("/v1/suppressions", params={"address": address, "cursor": address}),
    ):
        assert response.status_code < 500, response.text
        if response.status_code == 422:
            assert response.json()["detail"][0]["loc"][0] in ("path", "body", "query")


async def test_retrying_the_hard_bounced_notification_lifts_its_entry_and_sends_it(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = NO_SUCH_USER
    async with service(tmp_path, smtp) as client:
        location = (await accepted(client, BOB)).headers["location"]
        await reaches(client, location, "failed")
        # meanwhile the address is on the list: other mail to it is skipped
        await reaches(client, (await accepted(client, BOB)).headers["location"], "suppressed")
        smtp.behaviour.refuse.clear()
        assert (await client.post(f"{location}/retry")).status_code == 202
        await reaches(client, location, "sent")
        listed = await client.get("/v1/suppressions", params={"address": "bob@example.com"})
        assert listed.status_code == 200 and listed.json()["items"] == []
