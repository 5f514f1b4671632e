"""Each caller sees and acts on its own notifications only; an admin key, on everyone's.

Two callers share one service: billing and web. Another caller's notification answers 404 with
the body of an unknown id, for GET and cancel alike; lists, batches, idempotency keys and list
cursors are each caller's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from app.ids import new_uuid
from tests.conftest import BOTH_BACKENDS, WELCOME, wait_for
from tests.smtp_server import SmtpServer
from tests.test_accepting import rfc3339
from tests.test_delivery import service

KEYS = "billing:billing-secret-1,web:web-secret-2"
BILLING = {"Authorization": "Bearer billing-secret-1"}
WEB = {"Authorization": "Bearer web-secret-2"}


async def send(
    client: httpx.AsyncClient, key: dict[str, str], request: dict[str, Any] | None = None
) -> str:
    response = await client.post("/v1/notifications", json=request or WELCOME, headers=key)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def listed(client: httpx.AsyncClient, key: dict[str, str], **params: Any) -> list[str]:
    response = await client.get("/v1/notifications", params=params, headers=key)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def shown(client: httpx.AsyncClient, key: dict[str, str], notification_id: str) -> Any:
    response = await client.get(f"/v1/notifications/{notification_id}", headers=key)
    assert response.status_code == 200, response.text
    return response.json()


async def sent(client: httpx.AsyncClient, key: dict[str, str], *ids: str) -> None:
    async def done() -> bool:
        return [(await shown(client, key, i))["status"] for i in ids] == ["sent"] * len(ids)

    await wait_for(done)


def without_id(response: httpx.Response, notification_id: str) -> tuple[int, str, list[str]]:
    """The answer with the id taken out: an unknown id's and another caller's must match."""
    text = response.text.replace(notification_id, "<id>")
    return response.status_code, text, sorted(response.headers.keys())


@BOTH_BACKENDS
async def test_each_caller_lists_only_its_own_notifications_and_batches(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    async with service(tmp_path, smtp, api_keys=KEYS, database_url=database_url) as client:
        mine = {await send(client, BILLING)}
        batch = {"notifications": [WELCOME, WELCOME]}
        response = await client.post("/v1/notifications/batch", json=batch, headers=BILLING)
        assert response.status_code == 202, response.text
        mine |= {item["id"] for item in response.json()["items"]}
        theirs = {await send(client, WEB)}

        assert len(mine) == 3 and set(await listed(client, BILLING)) == mine
        assert set(await listed(client, WEB)) == theirs
        page = await client.get("/v1/notifications", headers=BILLING)
        assert {item["caller"] for item in page.json()["items"]} == {"billing"}
        for notification_id in mine:  # a batch's notifications are its caller's like any other
            assert (await shown(client, BILLING, notification_id))["caller"] == "billing"
            other = await client.get(f"/v1/notifications/{notification_id}", headers=WEB)
            assert other.status_code == 404


@BOTH_BACKENDS
async def test_another_callers_id_is_404_like_an_unknown_one_and_its_mail_still_goes_out(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    async with service(tmp_path, smtp, api_keys=KEYS, database_url=database_url) as client:
        # scheduled a moment ahead, so that it can still be cancelled when web tries
        billing = await send(client, BILLING, {**WELCOME, "send_at": rfc3339(1.5)})
        unknown = new_uuid()
        for method, path in (
            ("GET", "/v1/notifications/{}"),
            ("POST", "/v1/notifications/{}/cancel"),
        ):
            other = await client.request(method, path.format(billing), headers=WEB)
            missing = await client.request(method, path.format(unknown), headers=WEB)
            assert other.status_code == 404, other.text
            assert without_id(other, billing) == without_id(missing, unknown)

        assert (await shown(client, BILLING, billing))["status"] == "scheduled"
        await sent(client, BILLING, billing)
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.com"]]


@BOTH_BACKENDS
async def test_equal_idempotency_keys_from_two_callers_make_two_notifications_and_two_mails(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    ids: dict[str, str] = {}
    async with service(tmp_path, smtp, api_keys=KEYS, database_url=database_url) as client:
        for _ in range(2):  # the second round replays each caller's own
            for name, key in (("billing", BILLING), ("web", WEB)):
                headers = {**key, "Idempotency-Key": "order-42"}
                response = await client.post("/v1/notifications", json=WELCOME, headers=headers)
                assert response.status_code == 202, response.text
                assert ids.setdefault(name, response.json()["id"]) == response.json()["id"]
        assert ids["billing"] != ids["web"]
        await sent(client, BILLING, ids["billing"])
        await sent(client, WEB, ids["web"])
        message_ids = {
            (await shown(client, key, ids[name]))["message_id"]
            for name, key in (("billing", BILLING), ("web", WEB))
        }
        assert await listed(client, BILLING) == [ids["billing"]]
        assert await listed(client, WEB) == [ids["web"]]
    assert len(smtp.messages) == 2
    assert {m.message_id for m in smtp.messages} == message_ids


@BOTH_BACKENDS
async def test_a_cursor_from_one_callers_list_pages_another_through_its_own_rows_only(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    async with service(tmp_path, smtp, api_keys=KEYS, database_url=database_url) as client:
        webs = []
        for _ in range(3):  # interleaved, so that a cursor of billing's lies among web's rows
            webs.append(await send(client, WEB))
            await send(client, BILLING)
        page = await client.get("/v1/notifications", params={"limit": 1}, headers=BILLING)
        cursor = page.json()["next_cursor"]
        assert cursor is not None
        # billing's newest is the newest of all: after it come web's three, and nothing else
        assert await listed(client, WEB, cursor=cursor) == webs[::-1]
        walked: list[str] = []
        cursor_params: dict[str, Any] = {"limit": 1}
        while True:
            response = await client.get("/v1/notifications", params=cursor_params, headers=WEB)
            walked += [item["id"] for item in response.json()["items"]]
            if (cursor := response.json()["next_cursor"]) is None:
                break
            cursor_params["cursor"] = cursor
        assert walked == webs[::-1]


async def test_filtering_by_caller_without_the_admin_scope_is_403_naming_it(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, api_keys=KEYS) as client:
        await send(client, BILLING)
        for asked in ("billing", "web"):  # another's, or even one's own name
            response = await client.get("/v1/notifications", params={"caller": asked}, headers=WEB)
            assert response.status_code == 403, response.text
            assert "'admin'" in response.json()["detail"]
        too_long = await client.get("/v1/notifications", params={"caller": "x" * 65}, headers=WEB)
        assert too_long.status_code == 422
        assert too_long.json()["detail"][0]["loc"] == ["query", "caller"]


@BOTH_BACKENDS
async def test_without_authentication_every_callers_notification_is_shown_and_filtered(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    """AUTH=off serves one caller, who may do all (as an admin key): after keyed callers
    stored their mail, the same database without keys shows and acts on all of it."""
    async with service(tmp_path, smtp, api_keys=KEYS, database_url=database_url) as client:
        billing = await send(client, BILLING, {**WELCOME, "send_at": rfc3339(3600)})
        web = await send(client, WEB, {**WELCOME, "send_at": rfc3339(3600)})
    async with service(tmp_path, smtp, database_url=database_url) as client:
        assert set(await listed(client, {})) == {billing, web}
        assert await listed(client, {}, caller="billing") == [billing]
        assert await listed(client, {}, caller="web") == [web]
        assert await listed(client, {}, caller="nobody") == []
        assert (await shown(client, {}, web))["caller"] == "web"
        cancelled = await client.post(f"/v1/notifications/{billing}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


# -- admin keys from the keys file ----------------------------------------------------------

KEYS_FILE = """
[[keys]]
name = "ops"
key = "ops-admin-secret-3"
scopes = ["admin"]
"""
OPS = {"Authorization": "Bearer ops-admin-secret-3"}


@BOTH_BACKENDS
async def test_an_admin_key_sees_and_acts_on_every_callers_notifications(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(KEYS_FILE)
    settings = {"api_keys": KEYS, "api_keys_file": str(keys_file), "database_url": database_url}
    async with service(tmp_path, smtp, **settings) as client:
        billing = await send(client, BILLING, {**WELCOME, "send_at": rfc3339(3600)})
        web = await send(client, WEB, {**WELCOME, "send_at": rfc3339(3600)})
        assert set(await listed(client, OPS)) == {billing, web}
        assert await listed(client, OPS, caller="billing") == [billing]
        assert await listed(client, OPS, caller="web") == [web]
        assert (await shown(client, OPS, billing))["caller"] == "billing"
        cancelled = await client.post(f"/v1/notifications/{web}/cancel", headers=OPS)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await shown(client, WEB, web))["status"] == "cancelled"
