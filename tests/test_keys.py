"""Scoped keys from the keys file: scopes per route, and a key's templates, senders, recipients
and rate limit. Each allowed case reaches the SMTP server; each refused one names the field or
scope, and stores and sends nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.addresses import parse_address
from app.api.callers import Caller
from app.api.keyring import Keyring
from app.api.keys_file import parse_keys
from tests.conftest import WELCOME, count_rows, make_settings, wait_for
from tests.keys import bearer, table, write_keys
from tests.log_records import recorded
from tests.redis_server import shared_redis, unique_prefix
from tests.smtp_server import SmtpServer
from tests.test_delivery import service

BILLING = "billing-secret-key"
FULL = "full-secret-key"
ADMIN = "admin-secret-key"
SCOPED_KEYS = {scope: f"{scope}-only-secret-key" for scope in ("send", "read", "cancel", "preview")}


def keys_file(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.toml",
        table(
            "billing",
            BILLING,
            templates=["pass*", "receipt"],
            senders=["billing@example.com"],
            recipients=["@example.com", "boss@partner.org"],
        ),
        table("full", FULL),
        table("root", ADMIN, scopes=["admin"]),
        *(table(f"{s}-only", key, scopes=[s]) for s, key in SCOPED_KEYS.items()),
    )


@pytest.fixture
async def keyed(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[httpx.AsyncClient]:
    async with service(
        tmp_path, smtp, api_keys_file=keys_file(tmp_path), allowed_senders="@example.com"
    ) as client:
        yield client


async def stored(tmp_path: Path) -> int:
    return await count_rows(f"sqlite:///{tmp_path / 'notifications.db'}", "notifications")


RESET: dict[str, Any] = {
    "template": "password_reset",
    "to": ["ada@example.com"],
    "context": {"name": "Ada", "reset_url": "https://example.com/r", "expires_in_minutes": 5},
}

TOMORROW = (datetime.now(UTC) + timedelta(days=1)).isoformat()

# each route, and the scope it needs
ROUTES = [
    ("POST", "/v1/notifications", WELCOME, "send"),
    ("POST", "/v1/notifications/batch", {"notifications": [WELCOME]}, "send"),
    ("GET", "/v1/notifications", None, "read"),
    ("GET", "/v1/notifications/{id}", None, "read"),
    ("POST", "/v1/notifications/{id}/cancel", None, "cancel"),
    ("POST", "/v1/templates/welcome/preview", {"context": WELCOME["context"]}, "preview"),
]


async def call(
    client: httpx.AsyncClient, key: str, method: str, path: str, body: Any, some_id: str
) -> httpx.Response:
    return await client.request(method, path.format(id=some_id), json=body, headers=bearer(key))


async def test_a_key_without_the_routes_scope_gets_403_naming_it_and_nothing_is_stored(
    keyed: httpx.AsyncClient, tmp_path: Path, smtp: SmtpServer
) -> None:
    scheduled = {**WELCOME, "send_at": TOMORROW}
    created = await keyed.post("/v1/notifications", json=scheduled, headers=bearer(FULL))
    some_id = created.json()["id"]
    for method, path, body, scope in ROUTES:
        for other, key in SCOPED_KEYS.items():
            if other == scope:
                continue
            response = await call(keyed, key, method, path, body, some_id)
            assert response.status_code == 403, (path, other)
            assert response.json()["detail"] == (
                f"the key of '{other}-only' lacks the scope '{scope}'"
            )
    assert await stored(tmp_path) == 1 and smtp.messages == []


async def test_a_key_with_the_routes_scope_is_served(
    keyed: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    scheduled = {**WELCOME, "send_at": TOMORROW}
    for method, path, body, scope in ROUTES:
        for key in (SCOPED_KEYS[scope], ADMIN, FULL):  # admin implies every scope
            created = await keyed.post("/v1/notifications", json=scheduled, headers=bearer(FULL))
            some_id = created.json()["id"]
            response = await call(keyed, key, method, path, body, some_id)
            if key == SCOPED_KEYS[scope] and "{id}" in path:
                # past the scope check; the notification is another caller's, so unknown here
                assert response.status_code == 404, (path, key, response.text)
                continue
            assert response.is_success, (path, key, response.text)
    await wait_for(lambda: len(smtp.messages) == 2 * 3)  # both sending routes, three keys


async def test_templates_may_be_listed_by_any_key(keyed: httpx.AsyncClient) -> None:
    for key in SCOPED_KEYS.values():
        assert (await keyed.get("/v1/templates", headers=bearer(key))).status_code == 200


async def test_a_template_the_key_may_send_is_sent_and_another_is_422_naming_template(
    keyed: httpx.AsyncClient, tmp_path: Path, smtp: SmtpServer
) -> None:
    refused = await keyed.post("/v1/notifications", json=WELCOME, headers=bearer(BILLING))
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "template"] and "'welcome'" in error["msg"]
    assert await stored(tmp_path) == 0
    allowed = await keyed.post("/v1/notifications", json=RESET, headers=bearer(BILLING))
    assert allowed.status_code == 202, allowed.text
    await wait_for(lambda: len(smtp.messages) == 1)
    assert smtp.messages[0].message["To"] == "ada@example.com"


async def test_a_template_outside_the_keys_templates_cannot_be_previewed_or_seen_listed(
    keyed: httpx.AsyncClient,
) -> None:
    """A preview renders what the template would send: the key's templates bound it as they
    bound sending, and the list shows a key only the templates it may use."""
    refused = await keyed.post(
        "/v1/templates/welcome/preview",
        json={"context": WELCOME["context"]},
        headers=bearer(BILLING),
    )
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["path", "name"] and "'welcome'" in error["msg"]
    assert "subject" not in refused.text
    allowed = await keyed.post(
        "/v1/templates/password_reset/preview",
        json={"context": RESET["context"]},
        headers=bearer(BILLING),
    )
    assert allowed.status_code == 200 and allowed.json()["subject"]
    listed = await keyed.get("/v1/templates", headers=bearer(BILLING))
    assert [t["name"] for t in listed.json()] == ["password_reset"]
    everything = await keyed.get("/v1/templates", headers=bearer(FULL))
    assert {t["name"] for t in everything.json()} == {"password_reset", "welcome"}


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("Billing <billing@example.com>", True),
        (None, True),  # MAIL_FROM, which any key may use
        ("help@example.com", False),  # in ALLOWED_SENDERS, not in the key's senders
        ("boss@elsewhere.org", False),  # in neither
    ],
)
async def test_a_sender_outside_the_keys_senders_is_422_naming_from(
    keyed: httpx.AsyncClient,
    tmp_path: Path,
    smtp: SmtpServer,
    sender: str | None,
    allowed: bool,
) -> None:
    request = {**RESET, "from": sender} if sender else RESET
    response = await keyed.post("/v1/notifications", json=request, headers=bearer(BILLING))
    if allowed:
        assert response.status_code == 202, response.text
        await wait_for(lambda: len(smtp.messages) == 1)
        expected = sender or "Notifier <noreply@example.com>"
        assert smtp.messages[0].message["From"] == expected
    else:
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["detail"]] == [["body", "from"]]
        assert await stored(tmp_path) == 0 and smtp.messages == []


@pytest.mark.parametrize(
    ("field", "addresses", "loc"),
    [
        ("to", ["a@example.com", "b@example.com", "eve@elsewhere.org"], ["body", "to", 2]),
        ("cc", ["eve@example.com.evil.org"], ["body", "cc", 0]),
        ("bcc", ["a@example.com", "boss2@partner.org"], ["body", "bcc", 1]),
        # old routing syntax: example.com's server may forward these beyond example.com
        ("to", ["eve%evil.org@example.com"], ["body", "to", 0]),
        ("cc", ["a@example.com", "evil.org!eve@example.com"], ["body", "cc", 1]),
    ],
)
async def test_a_recipient_outside_the_keys_recipients_is_422_naming_its_place(
    keyed: httpx.AsyncClient,
    tmp_path: Path,
    smtp: SmtpServer,
    field: str,
    addresses: list[str],
    loc: list[Any],
) -> None:
    request = {**RESET, field: addresses}
    response = await keyed.post("/v1/notifications", json=request, headers=bearer(BILLING))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == loc and addresses[loc[2]] in error["msg"]
    assert await stored(tmp_path) == 0 and smtp.messages == []


async def test_recipients_within_the_keys_addresses_and_domains_get_the_mail(
    keyed: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    request = {
        **RESET,
        "to": ["a@EXAMPLE.com"],
        "cc": ["Boss@partner.org"],
        "bcc": ["b@example.com"],
    }
    response = await keyed.post("/v1/notifications", json=request, headers=bearer(BILLING))
    assert response.status_code == 202, response.text
    await wait_for(lambda: len(smtp.messages) == 1)
    assert sorted(smtp.messages[0].rcpt_tos) == [
        "Boss@partner.org",
        "a@example.com",
        "b@example.com",
    ]


async def test_a_batch_refuses_what_the_key_may_not_send_by_index(
    keyed: httpx.AsyncClient, tmp_path: Path, smtp: SmtpServer
) -> None:
    items = [
        RESET,
        WELCOME,
        {**RESET, "to": ["a@example.com", "eve@elsewhere.org"]},
        {**RESET, "from": "help@example.com"},
    ]
    response = await keyed.post(
        "/v1/notifications/batch", json={"notifications": items}, headers=bearer(BILLING)
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (1, 3)
    errors = [item.get("error") for item in body["items"]]
    assert errors[0] is None
    assert [e[0]["loc"] for e in errors[1:]] == [["template"], ["to", 1], ["from"]]
    await wait_for(lambda: len(smtp.messages) == 1)
    assert await stored(tmp_path) == 1


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("billing@example.com", True),  # the key may send as that address
        ("Billing (billing@example.com)", True),
        ("support@example.com", False),  # the service may, this key may not
        ("ceo@bank.example", False),
        ("support\uff20example.com", False),  # a fullwidth at sign reads as @
        ("support@\u200bexample.com", False),  # so does one with a zero-width space
        ("Ada @ home", True),  # no address in it
        ('"support"@example.com', False),  # a quoted local part is that address too
        ("support@(example.com)", False),  # so it reads, whatever wraps its parts
        ("<support>@[example.com]", False),
        ("billing@example.com@bank.example", False),  # an allowed address is no cover
        ("ceo@[127.0.0.1]", False),  # an address literal is an address
    ],
)
async def test_a_display_name_cannot_pose_as_an_address_the_key_may_not_use(
    keyed: httpx.AsyncClient, tmp_path: Path, smtp: SmtpServer, name: str, allowed: bool
) -> None:
    sender = {"email": "billing@example.com", "name": name}
    await sent_or_refused_for_its_name(keyed, tmp_path, smtp, "from", sender, allowed=allowed)


async def sent_or_refused_for_its_name(
    client: httpx.AsyncClient,
    tmp_path: Path,
    smtp: SmtpServer,
    field: str,
    address: dict[str, str],
    *,
    allowed: bool,
) -> None:
    """BILLING sends RESET with `address` as `field`: the mail arrives, or a 422 naming
    `field` for its display name leaves nothing stored or sent."""
    request = {**RESET, field: address}
    response = await client.post("/v1/notifications", json=request, headers=bearer(BILLING))
    if allowed:
        assert response.status_code == 202, response.text
        await wait_for(lambda: len(smtp.messages) == 1)
    else:
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", field] and "display name" in error["msg"]
        assert await stored(tmp_path) == 0 and smtp.messages == []


async def test_without_auth_a_display_name_may_hold_only_allowed_senders(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, allowed_senders="@example.com") as client:
        posing = {**WELCOME, "from": '"ceo@bank.example" <noreply@example.com>'}
        refused = await client.post("/v1/notifications", json=posing)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "from"]
        fine = {**WELCOME, "from": '"help@example.com" <noreply@example.com>'}
        assert (await client.post("/v1/notifications", json=fine)).status_code == 202
        await wait_for(lambda: len(smtp.messages) == 1)
    assert await stored(tmp_path) == 1


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_a_keys_rate_limit_replaces_rate_limit_in_a_window_of_its_own(
    tmp_path: Path, smtp: SmtpServer, storage: str
) -> None:
    path = write_keys(
        tmp_path / "keys.toml",
        table("slow", "slow-secret-key", rate_limit="2/minute"),
        table("fast", "fast-secret-key"),
    )
    shared: dict[str, Any] = {}
    if storage == "redis":
        shared = {
            "rate_limit_storage": await shared_redis(),
            "rate_limit_key_prefix": unique_prefix(),
        }
    async with service(
        tmp_path, smtp, api_keys_file=path, rate_limit="4/minute", **shared
    ) as client:

        async def codes(key: str, count: int) -> list[int]:
            return [
                (
                    await client.post("/v1/notifications", json=WELCOME, headers=bearer(key))
                ).status_code
                for _ in range(count)
            ]

        batch = {"notifications": [WELCOME] * 3}
        too_big = await client.post(
            "/v1/notifications/batch", json=batch, headers=bearer("slow-secret-key")
        )
        assert too_big.status_code == 422 and "2/minute" in too_big.text
        assert await codes("slow-secret-key", 2) == [202, 429]  # the batch cost one
        assert await codes("fast-secret-key", 5) == [202] * 4 + [429]
        refused = await client.post(
            "/v1/notifications", json=WELCOME, headers=bearer("slow-secret-key")
        )
        assert "2/minute" in refused.json()["detail"] and "'slow'" in refused.json()["detail"]
    await wait_for(lambda: len(smtp.messages) == 5)


async def test_the_keys_of_one_caller_share_its_rate_limit(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """A rate limit is the caller's, not each key's: a second key (while rotating) must not
    double what the caller may send."""
    path = write_keys(
        tmp_path / "keys.toml",
        table("slow", "slow-old-key", rate_limit="2/minute"),
        table("slow", "slow-new-key", rate_limit="2/minute"),
    )
    async with service(tmp_path, smtp, api_keys_file=path) as client:
        codes = [
            (await client.post("/v1/notifications", json=WELCOME, headers=bearer(key))).status_code
            for key in ("slow-old-key", "slow-new-key", "slow-new-key", "slow-old-key")
        ]
        assert codes == [202, 202, 429, 429]
    await wait_for(lambda: len(smtp.messages) == 2)


async def test_a_keys_rate_limit_applies_with_rate_limit_off(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    path = write_keys(tmp_path / "keys.toml", table("slow", "slow-secret-key", rate_limit="1/hour"))
    async with service(tmp_path, smtp, api_keys_file=path, rate_limit="off") as client:
        first, second = [
            await client.post("/v1/notifications", json=WELCOME, headers=bearer("slow-secret-key"))
            for _ in range(2)
        ]
    assert (first.status_code, second.status_code) == (202, 429)
    assert int(second.headers["retry-after"]) > 3000


async def test_keys_of_api_keys_and_of_the_file_both_apply_the_environments_with_default_scopes(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    path = write_keys(tmp_path / "keys.toml", table("reader", "reader-secret-key", scopes=["read"]))
    async with service(tmp_path, smtp, api_keys="web:web-secret-key", api_keys_file=path) as client:
        sent = await client.post(
            "/v1/notifications", json=WELCOME, headers=bearer("web-secret-key")
        )
        assert sent.status_code == 202
        shown = await client.get(sent.headers["location"], headers=bearer("web-secret-key"))
        assert shown.json()["caller"] == "web"
        # the environment's key has the default scopes, which do not hold admin
        everyone = await client.get(
            "/v1/notifications?caller=web", headers=bearer("web-secret-key")
        )
        assert everyone.status_code == 403 and "'admin'" in everyone.json()["detail"]
        # the file's key has its own scopes: it may read (its own mail only), not send
        listed = await client.get("/v1/notifications", headers=bearer("reader-secret-key"))
        assert listed.status_code == 200 and listed.json()["items"] == []
        refused = await client.post(
            "/v1/notifications", json=WELCOME, headers=bearer("reader-secret-key")
        )
        assert refused.status_code == 403
        await wait_for(lambda: len(smtp.messages) == 1)


async def test_two_keys_of_one_caller_both_work_while_rotating(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    path = write_keys(
        tmp_path / "keys.toml",
        table("billing", "billing-old-key", scopes=["send", "read"]),
        table("billing", "billing-new-key", scopes=["send", "read"]),
    )
    async with service(tmp_path, smtp, api_keys_file=path) as client:
        for key in ("billing-old-key", "billing-new-key"):
            sent = await client.post("/v1/notifications", json=WELCOME, headers=bearer(key))
            shown = await client.get(sent.headers["location"], headers=bearer(key))
            assert shown.json()["caller"] == "billing"
        await wait_for(lambda: len(smtp.messages) == 2)


@pytest.fixture
def keyring_log() -> Iterator[list[logging.LogRecord]]:
    with recorded("app.api.keyring") as records:
        yield records


async def test_a_changed_keys_file_is_read_again_and_a_malformed_one_keeps_the_keys(
    tmp_path: Path, smtp: SmtpServer, keyring_log: list[logging.LogRecord]
) -> None:
    path = write_keys(tmp_path / "keys.toml", table("old", "old-secret-key"))
    async with service(tmp_path, smtp, api_keys_file=path) as client:

        async def status(key: str) -> int:
            response = await client.get("/v1/notifications", headers=bearer(key))
            return response.status_code

        write_keys(path, table("new", "new-secret-key"), '[[keys]]\nname = "broken"\n')
        await wait_for(lambda: any("keys.reload_failed" in r.getMessage() for r in keyring_log))
        assert (await status("old-secret-key"), await status("new-secret-key")) == (200, 401)
        failed = next(r for r in keyring_log if r.getMessage() == "keys.reload_failed")
        logged = str(vars(failed))
        assert "line 5" in logged and "new-secret-key" not in logged

        write_keys(path, table("new", "new-secret-key"))

        async def swapped() -> bool:
            return await status("old-secret-key") == 401

        await wait_for(swapped, within=5)
        assert await status("new-secret-key") == 200
    assert all("secret-key" not in str(vars(r)) for r in keyring_log)


async def test_a_keys_file_written_in_place_is_not_read_half_written(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """An editor or `cat >` writes the file in pieces; one cut after a key's name and digest,
    before its limits, is valid TOML that gives the key no limits at all. The file is read
    only once a look finds it as the previous look did."""
    restricted = table("billing", BILLING, templates=["pass*"], recipients=["@example.com"])
    path = write_keys(tmp_path / "keys.toml", restricted)
    keyring = Keyring(make_settings(tmp_path, smtp.port, api_keys_file=path))
    complete = restricted + table("full", FULL)
    cut = complete.index("templates")
    with path.open("w") as writing:
        writing.write(complete[:cut])  # "billing" and its key, nothing else yet
        writing.flush()
        await keyring.look()
        assert keyring.identify(BILLING) == keyring_caller(restricted, path)
        writing.write(complete[cut:])
    await keyring.look()  # changed again since the last look: still being written
    assert keyring.identify(FULL) is None
    await keyring.look()  # as the last look found it: read now
    assert keyring.identify(FULL) is not None
    assert keyring.identify(BILLING) == keyring_caller(restricted, path)


def keyring_caller(text: str, path: Path) -> Caller:
    [key] = parse_keys(
        text, source=str(path), allowed_senders=[], mail_from=parse_address("a@example.com")
    )
    return key.caller


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("Billing desk", True),
        ("billing@example.com", True),  # the key may send as that address
        ("ceo@example.com", False),  # replies signed as someone the key may not be
        ('"ceo"@bank.example', False),
    ],
)
async def test_a_reply_to_name_cannot_pose_as_an_address_the_key_may_not_use(
    keyed: httpx.AsyncClient, tmp_path: Path, smtp: SmtpServer, name: str, allowed: bool
) -> None:
    reply_to = {"email": "desk@elsewhere.example", "name": name}
    await sent_or_refused_for_its_name(keyed, tmp_path, smtp, "reply_to", reply_to, allowed=allowed)
