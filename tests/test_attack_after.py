"""An attacker's review of what came after the 202: status webhooks, the suppression list and
one-click unsubscribe, bulk replay. Each test is a way a hostile caller (or a confused one) tried
to break them. Those marked xfail are defects still open: the reason says what should happen.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.webhooks.dispatcher import PER_CALLER
from app.webhooks.resolver import PER_CALLER as RESOLVER_SHARE
from app.webhooks.signature import HEADER, verify
from app.webhooks.targets import why_forbidden
from tests.conftest import BOTH_BACKENDS, WELCOME, wait_for
from tests.live import running, service_env, uvicorn_command
from tests.postgres import free_port
from tests.smtp_server import SmtpServer
from tests.test_delivery import service
from tests.test_ownership import BILLING, KEYS, WEB
from tests.test_webhooks import SECRET, hooked_service
from tests.webhook_receiver import Receiver

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


# --- SSRF ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        # behind a NAT64 gateway 64:ff9b::10.0.0.5 is 10.0.0.5
        ("64:ff9b::a00:5", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # the metadata service, 169.254.169.254
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible, deprecated
        ("::a00:5", "private"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffa", "private"),  # Teredo, client 10.0.0.5
        ("64:ff9b:1::a00:5", "local-use NAT64"),  # translates into the local network
        ("64:ff9b:1:ffff::808:808", "local-use NAT64"),  # whatever it carries
    ],
)
def test_ipv6_forms_embedding_a_private_ipv4_address_are_refused(address: str, why: str) -> None:
    assert why_forbidden(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "::ffff:93.184.216.34"])
def test_ipv6_forms_embedding_a_public_ipv4_address_pass(address: str) -> None:
    """An IPv6-only network reaches IPv4-only receivers through NAT64 (DNS64 answers
    64:ff9b::a.b.c.d): the embedded address decides, so those keep working."""
    assert why_forbidden(ipaddress.ip_address(address)) is None


@given(st.ip_addresses(v=4))
def test_every_ipv6_form_of_a_refused_ipv4_address_is_refused(v4: ipaddress.IPv4Address) -> None:
    """Whatever IPv4 address, its NAT64, 6to4, mapped and compatible forms are judged as it is
    (IPv4-compatible forms of 0.0.0.0 and 0.0.0.1 are IPv6's :: and ::1, refused as well)."""
    forms = [
        ipaddress.IPv6Address(f"64:ff9b::{v4}"),
        ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80)),
        ipaddress.IPv6Address(f"::ffff:{v4}"),
        ipaddress.IPv6Address(f"::{v4}"),
    ]
    refused = why_forbidden(v4) is not None
    for form in forms:
        assert (why_forbidden(form) is not None) >= refused, form
    assert (why_forbidden(forms[0]) is None) == (not refused)  # NAT64: only the IPv4 decides


@pytest.mark.parametrize("url", ["https://93.184.216.34:0/", "https://example.com:0/hook"])
async def test_port_0_is_refused_not_sent_to_443(
    tmp_path: Path, smtp: SmtpServer, url: str
) -> None:
    async with service(tmp_path, smtp, webhook_secret=SECRET) as client:
        response = await client.post("/v1/notifications", json={**WELCOME, "callback_url": url})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "callback_url"] and "port 0" in error["msg"]


async def test_a_refused_name_does_not_tell_the_address_it_resolves_to(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, webhook_secret=SECRET) as client:
        response = await client.post(
            "/v1/notifications", json={**WELCOME, "callback_url": "https://localhost/"}
        )
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert "loopback" in message
    assert "127.0.0.1" not in message and "::1" not in message


def _blackhole_dns() -> tuple[socket.socket, str]:
    """A name server that reads every query and answers none, on 127.x.y.z port 53."""
    for _ in range(20):
        address = f"127.{os.urandom(1)[0] % 200 + 20}.{os.urandom(1)[0]}.{os.urandom(1)[0] or 1}"
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            server.bind((address, 53))
        except OSError:
            server.close()
            continue
        return server, address
    raise AssertionError("no free 127.x.y.z:53")


async def _drain(server: socket.socket, stop_at: asyncio.Event) -> None:
    server.setblocking(False)
    loop = asyncio.get_running_loop()
    while not stop_at.is_set():
        try:
            async with asyncio.timeout(0.2):
                await loop.sock_recv(server, 4096)
        except TimeoutError:
            pass


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs a mount namespace (root and unshare) to give the service a slow resolver",
)
async def test_a_caller_whose_dns_never_answers_does_not_stop_another_callers_mail(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    hosts, resolv = tmp_path / "hosts", tmp_path / "resolv.conf"
    hosts.write_text(f"127.0.0.1 localhost {socket.gethostname()}\n::1 localhost\n")
    server, address = _blackhole_dns()
    resolv.write_text(f"nameserver {address}\noptions timeout:5 attempts:2\n")
    port, log = free_port(), tmp_path / "service.log"
    env = service_env(
        tmp_path,
        smtp.port,
        SMTP_HOST="localhost",  # a name, as in .env.example and as providers give it
        API_KEYS=KEYS,
        WEBHOOK_SECRET=SECRET,
    )
    namespaced = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && exec "$@"',
        "sh",
        *uvicorn_command(port),
    ]
    done = asyncio.Event()
    drain = asyncio.create_task(_drain(server, done))
    try:
        async with running(namespaced, env=env, port=port, log=log) as live:
            hostile = [
                live.client.post(
                    "/v1/notifications",
                    json={**WELCOME, "callback_url": f"https://h{i}.slow.example/"},
                    headers=BILLING,
                )
                for i in range(10)
            ]
            refused = await asyncio.gather(*hostile)
            assert {r.status_code for r in refused} == {422}
            reasons = [r.json()["detail"][0]["msg"] for r in refused]
            # its share of lookups hangs; the rest are not even started
            assert sum("did not resolve within 2 s" in m for m in reasons) == RESOLVER_SHARE
            assert sum("still under way" in m for m in reasons) == 10 - RESOLVER_SHARE
            started = time.monotonic()
            again = await live.client.post(
                "/v1/notifications",
                json={**WELCOME, "callback_url": "https://h0.slow.example/"},
                headers=BILLING,
            )
            assert again.status_code == 422  # refused at once: it timed out a moment ago
            assert "not looked up again" in again.json()["detail"][0]["msg"]
            assert time.monotonic() - started < 1
            accepted = await live.client.post("/v1/notifications", json=WELCOME, headers=WEB)
            location = accepted.headers["location"]
            # web's own callback_url is still looked up (the hosts file), and judged
            checked = await live.client.post(
                "/v1/notifications",
                json={**WELCOME, "callback_url": "https://localhost/"},
                headers=WEB,
            )
            assert "resolves to a loopback address" in checked.json()["detail"][0]["msg"]

            async def status() -> str:
                shown = (await live.client.get(location, headers=WEB)).json()
                return str(shown["status"])

            await wait_for(lambda: len(smtp.recorder.messages) == 1, within=5)
            assert await status() == "sent"
    finally:
        done.set()
        await drain
        server.close()


# --- webhook delivery -----------------------------------------------------------------------


@dataclass
class Hanging:
    """A receiver that takes every connection, reads the request and never answers."""

    port: int = 0
    seen: list[float] = field(default_factory=list)  # when each connection came
    open: int = 0  # connections it holds now


@pytest.fixture
async def hanging() -> AsyncIterator[Hanging]:
    receiver = Hanging()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        receiver.seen.append(time.time())
        receiver.open += 1
        try:
            await reader.read()  # until the service gives up and closes
        finally:
            receiver.open -= 1
            writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    yield receiver
    server.close()


async def test_one_callers_hanging_receiver_does_not_hold_up_another_callers_events(
    tmp_path: Path, smtp: SmtpServer, hanging: Hanging
) -> None:
    """Billing's receiver hangs (each POST takes the 5 s timeout) with 48 events owed: it gets
    its share of the dispatcher's POSTs and no more, and web's event goes out at once."""
    receiver = await Receiver().start()
    try:
        async with service(
            tmp_path,
            smtp,
            api_keys=KEYS,
            webhook_secret=SECRET,
            webhook_allow_hosts="127.0.0.1",
            poll_interval=0.05,
            shutdown_grace_seconds=0.5,
        ) as client:
            stuck = {**WELCOME, "callback_url": f"http://127.0.0.1:{hanging.port}/hook"}
            for _ in range(48):
                response = await client.post("/v1/notifications", json=stuck, headers=BILLING)
                assert response.status_code == 202
            await wait_for(lambda: hanging.open >= PER_CALLER, within=10)
            web = await client.post(
                "/v1/notifications",
                json={**WELCOME, "callback_url": receiver.url},
                headers=WEB,
            )
            assert web.status_code == 202
            await wait_for(lambda: len(receiver.delivered) == 1, within=3)
    finally:
        await receiver.stop()
    # its share, never the whole dispatcher: until the first of its POSTs times out (5 s), no
    # other of its events may start
    first = hanging.seen[0]
    assert len([at for at in hanging.seen if at < first + 4.5]) == PER_CALLER


async def test_another_callers_events_are_a_404_like_the_notification(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    async with hooked_service(tmp_path, smtp, receiver, api_keys=KEYS) as client:
        accepted = await client.post(
            "/v1/notifications",
            json={**WELCOME, "callback_url": receiver.url},
            headers=BILLING,
        )
        location = accepted.headers["location"]
        await wait_for(lambda: len(receiver.delivered) == 1)
        own = await client.get(f"{location}/events", headers=BILLING)
        other = await client.get(f"{location}/events", headers=WEB)
    assert own.status_code == 200 and len(own.json()["items"]) == 1
    notification_id = location.rsplit("/", 1)[1]
    # the answer of an unknown id: nothing tells that someone else's mail is behind it
    assert (other.status_code, other.json()) == (
        404,
        {"detail": f"no notification with id {notification_id!r}"},
    )


async def test_one_callers_signed_event_cannot_pass_as_another_callers(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver
) -> None:
    async with hooked_service(tmp_path, smtp, receiver, api_keys=KEYS) as client:
        forged = {**WELCOME, "callback_url": receiver.url, "metadata": {"order": "web-42"}}
        accepted = await client.post("/v1/notifications", json=forged, headers=BILLING)
        assert accepted.status_code == 202
        await wait_for(lambda: len(receiver.delivered) == 1)
    (hit,) = receiver.delivered
    # What web's receiver does, as the README tells it: verify with WEBHOOK_SECRET (the secret
    # web shares with billing), then take only events whose signed `caller` is web.
    assert hit.verifies(SECRET)
    assert hit.event["caller"] == "billing"
    passes_as_webs = hit.verifies(SECRET) and hit.event["caller"] == "web"
    assert not passes_as_webs
    # and the name cannot be changed without breaking the signature
    forged_body = hit.body.replace(b'"caller":"billing"', b'"caller":"web"')
    assert forged_body != hit.body
    header = hit.headers[HEADER.lower()]
    assert not verify(header, forged_body, SECRET, now=time.time())


# --- suppression list ------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_an_address_with_a_slash_can_be_put_on_and_taken_off_the_list(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    """a/b@example.com is an address the service sends to (and a hard bounce can list); it was
    a 404 from the router on PUT and DELETE, so such an entry could never be removed."""
    async with service(tmp_path, smtp, database_url=database_url) as client:
        path = f"/v1/suppressions/{quote('a/b@example.com', safe='@')}"
        put = await client.put(path, json={"reason": "manual"})
        listed = await client.get("/v1/suppressions", params={"address": "a/b@example.com"})
        deleted = await client.delete(path)
        again = await client.delete(path)
    assert put.status_code == 201, put.text
    assert [e["address"] for e in listed.json()["items"]] == ["a/b@example.com"]
    assert deleted.status_code == 204
    assert again.status_code == 404
    assert again.json()["detail"][0]["loc"] == ["path", "address"]


@BOTH_BACKENDS
@pytest.mark.parametrize(
    "cursor", [["\ud800", "a", "b"], ["a", "\u0000", "b"], ["a", "b", "\udfff\u0000"]]
)
async def test_a_suppression_cursor_with_text_no_store_holds_is_a_422(
    tmp_path: Path, smtp: SmtpServer, database_url: str, cursor: list[str]
) -> None:
    """A lone surrogate was a 500 on SQLite, a NUL a 500 on PostgreSQL."""
    async with service(tmp_path, smtp, database_url=database_url) as client:
        response = await client.get("/v1/suppressions", params={"cursor": _cursor(cursor)})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


@BOTH_BACKENDS
@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.one_of(st.text(), st.integers(), st.none()), min_size=0, max_size=4)
    | st.binary().map(lambda b: b.decode("latin-1"))
)
async def test_any_suppression_cursor_is_a_page_or_a_422(
    tmp_path: Path, smtp: SmtpServer, database_url: str, value: Any
) -> None:
    async with service(tmp_path, smtp, database_url=database_url) as client:
        response = await client.get("/v1/suppressions", params={"cursor": _cursor(value)})
    assert response.status_code in (200, 422), response.text


# --- hostile strings on PostgreSQL: NUL is text Python holds and PostgreSQL refuses ----------


@ON_POSTGRES
async def test_a_nul_in_the_id_of_events_is_a_404_on_postgres(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    async with service(tmp_path, smtp, database_url=database_url) as client:
        response = await client.get("/v1/notifications/%00/events")
    assert response.status_code in (400, 404)  # the URL holds a NUL


@ON_POSTGRES
@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"error_contains": "554\u0000"}},
        {"cursor": base64.urlsafe_b64encode(b"1.5|\x00").decode()},
    ],
)
async def test_replay_with_a_nul_is_a_422_on_postgres(
    tmp_path: Path, smtp: SmtpServer, database_url: str, body: dict[str, Any]
) -> None:
    async with service(tmp_path, smtp, database_url=database_url) as client:
        response = await client.post("/v1/notifications/replay", json=body)
    assert response.status_code == 422


@ON_POSTGRES
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_an_admins_caller_with_a_nul_is_a_422_on_postgres(
    tmp_path: Path, smtp: SmtpServer, database_url: str, method: str
) -> None:
    async with service(tmp_path, smtp, database_url=database_url) as client:
        path = "/v1/suppressions" if method == "GET" else "/v1/suppressions/a@example.com"
        response = await client.request(
            method,
            path,
            params={"caller": "web\u0000"},
            json={} if method == "PUT" else None,
        )
    assert response.status_code in (400, 422)  # the URL holds a NUL
