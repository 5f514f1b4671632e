"""No SSRF: a callback URL that leads into our own network is refused when the request is
accepted (422 naming callback_url) and again when the event is sent."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.settings import Settings
from app.webhooks.targets import RefusedTarget, Target, parse_target, why_forbidden
from tests.conftest import WELCOME, make_settings, wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, reaches, service
from tests.test_webhooks import SECRET
from tests.webhook_receiver import Receiver

REFUSED = [
    "https://169.254.169.254/latest/meta-data/",  # the cloud metadata service: link-local
    "https://10.0.0.1/",  # private
    "https://localhost/",  # a name resolving to loopback
    # names that resolve to 127.0.0.1 without being its dotted form (inet_aton's shorthands)
    "https://127.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",  # IPv4 loopback mapped into IPv6
    "https://0.0.0.0/",  # unspecified
    "https://224.0.0.1/",  # multicast
    "https://192.168.1.20:8443/hook",
    "https://100.64.0.1/",  # shared address space: not public
    "http://93.184.216.34/",  # public, but not https
    "https://no-such-host.invalid/",  # does not resolve
    "ftp://example.com/",
    "https://user:password@93.184.216.34/",
    "https://93.184.216.34/#fragment",
    "/relative/path",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_a_callback_url_into_our_network_is_422_naming_it(
    tmp_path: Path, smtp: SmtpServer, url: str
) -> None:
    async with service(tmp_path, smtp, webhook_secret=SECRET) as client:
        response = await client.post("/v1/notifications", json={**WELCOME, "callback_url": url})
        batch = await client.post(
            "/v1/notifications/batch",
            json={"notifications": [WELCOME, {**WELCOME, "callback_url": url}]},
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "callback_url"]
    assert "callback_url" in error["msg"]
    assert batch.status_code == 202
    items = batch.json()["items"]
    assert items[0]["id"] is not None
    assert items[1]["error"][0]["loc"] == ["callback_url"]


async def test_the_allow_list_lets_development_call_http_on_loopback(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    url = "http://127.0.0.1:8999/hook"
    request = {**WELCOME, "callback_url": url}
    async with service(tmp_path, smtp, webhook_secret=SECRET) as client:
        assert (await client.post("/v1/notifications", json=request)).status_code == 422
    async with service(
        tmp_path, smtp, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1:8999"
    ) as client:
        assert (await client.post("/v1/notifications", json=request)).status_code == 202
        other_port = {**request, "callback_url": "http://127.0.0.1:9000/hook"}
        assert (await client.post("/v1/notifications", json=other_port)).status_code == 422
    async with service(
        tmp_path, smtp, webhook_secret=SECRET, webhook_allow_hosts="127.0.0.1"
    ) as client:
        assert (await client.post("/v1/notifications", json=other_port)).status_code == 202


async def test_the_address_is_checked_again_when_the_event_is_sent(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """Accepted while the allow-list let it pass; by the time the event is sent it does not:
    the sending process refuses to connect (as it would after a DNS change)."""
    receiver = await Receiver().start()
    try:
        url = f"https://127.0.0.1:{receiver.port}/hooks"
        accepting = {"webhook_secret": SECRET, "delivery": "off"}
        async with service(
            tmp_path, smtp, webhook_allow_hosts=f"127.0.0.1:{receiver.port}", **accepting
        ) as client:
            location = await accept(client, {**WELCOME, "callback_url": url})
        async with service(tmp_path, smtp, webhook_secret=SECRET, poll_interval=0.05) as client:
            await reaches(client, location, "sent")

            async def refused() -> bool:
                items = (await client.get(f"{location}/events")).json()["items"]
                return bool(items and items[0]["attempts"])

            await wait_for(refused)
            (event,) = (await client.get(f"{location}/events")).json()["items"]
    finally:
        await receiver.stop()
    assert event["status"] == "pending"
    (attempt,) = event["attempts"][:1]
    assert attempt["status_code"] is None
    assert "host '127.0.0.1' is a loopback address" in attempt["error"]
    assert receiver.hits == []


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "link-local"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("fd00::1", "private"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not public"),  # shared address space (carrier-grade NAT)
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_which_addresses_are_refused(address: str, why: str | None) -> None:
    found = why_forbidden(ipaddress.ip_address(address))
    assert (found or "").split(" address")[0] == (why or "")


@given(st.text(max_size=80) | st.from_regex(r"\Ahttps?://[a-z0-9.:\[\]@%-]{0,30}(/[ -~]{0,20})?\Z"))
def test_any_text_is_refused_with_a_reason_or_parses_into_a_target(text: str) -> None:
    try:
        target = parse_target(text)
    except RefusedTarget as exc:
        assert str(exc)
        return
    assert isinstance(target, Target)
    assert target.scheme in {"http", "https"} and target.host
    assert 0 <= target.port <= 65535 and target.path.startswith("/")
    # where a delivery connects: the checked address, the rest of the URL as it was
    moved = parse_target(target.at(ipaddress.ip_address("93.184.216.34")))
    assert (moved.host, moved.port, moved.path) == ("93.184.216.34", target.port, target.path)


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpServer, database_url: str) -> Settings:
    """For `client`: accepting only (no event is sent anywhere), with a secret to sign with."""
    return make_settings(
        tmp_path, smtp.port, database_url=database_url, delivery="off", webhook_secret=SECRET
    )


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    host=st.ip_addresses().map(str),
    path=st.text(st.characters(min_codepoint=32, exclude_categories=["Cs"]), max_size=20),
)
async def test_any_callback_url_on_an_address_is_202_or_422_never_500(
    client: httpx.AsyncClient, host: str, path: str
) -> None:
    """Through the API: whatever the address and path, a 422 names callback_url, or the
    request is accepted (only public addresses can be) and reads back with it."""
    url = f"https://{host if ':' not in host else f'[{host}]'}/{path}"
    response = await client.post("/v1/notifications", json={**WELCOME, "callback_url": url})
    assert response.status_code in {202, 422}, response.text
    if response.status_code == 422:
        assert response.json()["detail"][0]["loc"] == ["body", "callback_url"]
        return
    assert why_forbidden(ipaddress.ip_address(host)) is None
    events = await client.get(f"{response.headers['location']}/events")
    assert events.json() == {"items": []}
