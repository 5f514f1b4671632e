"""AUTH_FAILURE_LIMIT: failed authentication throttled per client address (IPv6 per /64), in
memory or in Redis shared by replicas; only failures are counted and refused, so a correct
key from a throttled address still passes; counted in metrics by outcome, never logged."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.api.auth_throttle import AuthThrottle, client_key
from app.api.rate_limit import RateLimit, RateLimiter
from app.main import create_app
from app.ops.metrics import Metrics
from bench.processes import free_port
from tests.conftest import WELCOME, make_settings
from tests.live import read, running, service_env, uvicorn_command
from tests.redis_server import shared_redis, unique_prefix
from tests.replicas import replicas
from tests.smtp_server import SmtpServer
from tests.test_observability import sample

KEY = "web-secret-key-1"
WRONG = "guessed-key-0000"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def from_addresses(
    tmp_path: Path, smtp: SmtpServer, *addresses: str, **settings: Any
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One service, and a client for each address as the peer uvicorn would report."""
    application = create_app(make_settings(tmp_path, smtp.port, **settings))
    async with application.router.lifespan_context(application):
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application, client=(address, 40000)),
                base_url="http://t",
            )
            for address in addresses
        ]
        try:
            yield clients
        finally:
            for client in clients:
                await client.aclose()


async def send(client: httpx.AsyncClient, key: str | None) -> httpx.Response:
    headers = bearer(key) if key is not None else {}
    return await client.post("/v1/notifications", json=WELCOME, headers=headers)


async def test_wrong_keys_from_one_address_are_throttled_with_retry_after(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = {"api_keys": f"web:{KEY}", "auth_failure_limit": "3/minute"}
    async with from_addresses(tmp_path, smtp, "192.0.2.7", **settings) as (client,):
        answers = [await send(client, key) for key in (WRONG, None, WRONG, WRONG, KEY[:-1])]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert "AUTH_FAILURE_LIMIT" in refused.json()["detail"]
    # the answer names neither the key tried nor the address
    assert WRONG not in refused.text and KEY[:-1] not in refused.text
    assert "192.0.2.7" not in refused.text


async def test_a_correct_key_from_a_throttled_address_still_passes(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = {"api_keys": f"web:{KEY}", "auth_failure_limit": "2/minute"}
    async with from_addresses(tmp_path, smtp, "192.0.2.7", **settings) as (client,):
        assert [(await send(client, WRONG)).status_code for _ in range(3)] == [401, 401, 429]
        assert (await send(client, KEY)).status_code == 202
        assert (await client.get("/v1/templates", headers=bearer(KEY))).status_code == 200
        # a success forgives nothing: the next failure is still refused
        assert (await send(client, WRONG)).status_code == 429


async def test_another_address_keeps_its_own_allowance(tmp_path: Path, smtp: SmtpServer) -> None:
    settings = {"api_keys": f"web:{KEY}", "auth_failure_limit": "2/minute"}
    addresses = ("192.0.2.7", "2001:db8:1:2::7", "2001:db8:1:2::8", "2001:db8:1:3::7")
    async with from_addresses(tmp_path, smtp, *addresses, **settings) as clients:
        v4, v6, same_block, other_block = clients
        assert [(await send(v4, WRONG)).status_code for _ in range(3)] == [401, 401, 429]
        assert [(await send(v6, WRONG)).status_code for _ in range(2)] == [401, 401]
        # the same /64 is the same host's: its allowance is spent
        assert (await send(same_block, WRONG)).status_code == 429
        assert (await send(other_block, WRONG)).status_code == 401


async def test_auth_failure_limit_off_refuses_with_401_only(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = {"api_keys": f"web:{KEY}", "auth_failure_limit": "off"}
    async with from_addresses(tmp_path, smtp, "192.0.2.7", **settings) as (client,):
        assert {(await send(client, WRONG)).status_code for _ in range(30)} == {401}
        text = (await client.get("/metrics")).text
    assert sample(text, "notifier_auth_failures_total", outcome="refused") == 30


async def test_failures_are_counted_by_outcome_never_by_key_or_address(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = {"api_keys": f"web:{KEY}", "auth_failure_limit": "2/minute"}
    async with from_addresses(tmp_path, smtp, "192.0.2.7", **settings) as (client,):
        for _ in range(5):
            await send(client, WRONG)
        await send(client, KEY)
        text = (await client.get("/metrics")).text
    assert sample(text, "notifier_auth_failures_total", outcome="refused") == 2
    assert sample(text, "notifier_auth_failures_total", outcome="throttled") == 3
    series = [line for line in text.splitlines() if line.startswith("notifier_auth_failures")]
    assert all(line.split("{")[1].startswith('outcome="') for line in series if "{" in line)
    for secret in (WRONG, KEY, "192.0.2.7"):
        assert secret not in text


async def test_a_throttled_address_is_logged_once_and_no_key_ever(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {
        "api_keys": f"web:{KEY}",
        "auth_failure_limit": "2/minute",
        "log_format": "json",
        "log_level": "DEBUG",
    }
    addresses = ("192.0.2.7", "192.0.2.8")
    async with from_addresses(tmp_path, smtp, *addresses, **settings) as (client, other):
        for key in (WRONG, WRONG, WRONG, KEY, WRONG, WRONG):
            await send(client, key)
        await send(other, WRONG)
    output = capsys.readouterr().err
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    throttled = [e for e in events if e["event"] == "auth.throttled"]
    assert [(e["address"], e["level"]) for e in throttled] == [("192.0.2.7", "warning")]
    assert 1 <= throttled[0]["retry_after"] <= 61 and throttled[0]["limit"] == "2/minute"
    assert WRONG not in output and KEY not in output


async def test_the_throttle_kept_in_redis_is_shared_by_two_replicas(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    shared = {
        "api_keys": f"web:{KEY}",
        "auth_failure_limit": "2/minute",
        "rate_limit_storage": await shared_redis(),
        "rate_limit_key_prefix": unique_prefix(),
    }
    async with replicas(tmp_path, smtp, **shared) as (a, b):
        codes = [(await send(replica, WRONG)).status_code for replica in (a, b) * 3]
        assert codes == [401] * 2 + [429] * 4  # two in all, whichever replica saw them
        assert (await send(b, KEY)).status_code == 202


async def test_a_throttle_kept_in_memory_counts_for_each_process_alone(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    limit = {"api_keys": f"web:{KEY}", "auth_failure_limit": "2/minute"}
    async with replicas(tmp_path, smtp, **limit) as (a, b):
        codes = [(await send(replica, WRONG)).status_code for replica in (a, b) * 3]
    assert codes == [401] * 4 + [429] * 2  # two for each


async def test_a_live_server_throttles_the_peer_address_and_logs_no_key(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = service_env(tmp_path, smtp.port, API_KEYS=f"web:{KEY}", AUTH_FAILURE_LIMIT="2/minute")
    # uvicorn believes X-Forwarded-For only from proxies it trusts: here none (the default
    # trusts 127.0.0.1, the test itself)
    command = [*uvicorn_command(port), "--forwarded-allow-ips", "192.0.2.1"]
    async with running(command, env=env, port=port, log=log) as live:
        spoofed = {"X-Forwarded-For": "203.0.113.9"}
        codes = [
            (
                await live.client.get("/v1/templates", headers={**bearer(WRONG), **spoofed})
            ).status_code
            for _ in range(3)
        ]
        assert codes == [401, 401, 429]
        # the failures counted against the peer, not the address it claimed
        assert (await live.client.get("/v1/templates", headers=bearer(WRONG))).status_code == 429
        assert (await live.client.get("/v1/templates", headers=bearer(KEY))).status_code == 200
    assert WRONG not in read(log) and KEY not in read(log)


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    port = free_port()
    env = service_env(tmp_path, smtp.port, API_KEYS=f"web:{KEY}", AUTH_FAILURE_LIMIT="2/minute")
    command = [*uvicorn_command(port), "--forwarded-allow-ips", "127.0.0.1"]
    async with running(command, env=env, port=port, log=tmp_path / "uvicorn.log") as live:

        async def fail_from(address: str) -> int:
            headers = {**bearer(WRONG), "X-Forwarded-For": address}
            return (await live.client.get("/v1/templates", headers=headers)).status_code

        assert [await fail_from("203.0.113.9") for _ in range(3)] == [401, 401, 429]
        assert await fail_from("203.0.113.10") == 401


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=10),
    failures=st.lists(st.integers(min_value=0, max_value=3), max_size=40),
)
def test_each_address_has_exactly_its_allowance_within_a_window(
    count: int, failures: list[int]
) -> None:
    """Whatever the order of failures from four addresses: each address's first `count` are
    refused with 401 and the rest throttled, whatever the others did."""

    async def run() -> None:
        metrics = Metrics()
        limiter = RateLimiter()
        throttle = AuthThrottle(limiter, RateLimit(count=count, seconds=3600), metrics=metrics)
        seen = [0, 0, 0, 0]
        try:
            for who in failures:
                wait = await throttle.failed({"client": (f"198.51.100.{who}", 1)})
                seen[who] += 1
                assert (wait > 0) == (seen[who] > count)
        finally:
            await throttle.close()
        throttled = sum(max(0, n - count) for n in seen)
        counted = {
            outcome: metrics.registry.get_sample_value(
                "notifier_auth_failures_total", {"outcome": outcome}
            )
            for outcome in ("refused", "throttled")
        }
        assert counted == {"refused": len(failures) - throttled, "throttled": throttled}

    asyncio.run(run())


@given(st.ip_addresses(v=6), st.ip_addresses(v=6))
def test_ipv6_addresses_count_per_64_block(
    first: ipaddress.IPv6Address, second: ipaddress.IPv6Address
) -> None:
    same_block = first.packed[:8] == second.packed[:8]
    if first.ipv4_mapped is None and second.ipv4_mapped is None:
        key_of = [client_key({"client": (str(a), 1)}) for a in (first, second)]
        assert (key_of[0] == key_of[1]) == same_block
        assert ipaddress.ip_network(key_of[0]).prefixlen == 64


@given(st.ip_addresses(v=4))
def test_ipv4_addresses_count_alone_also_when_mapped_into_ipv6(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert client_key({"client": (str(address), 1)}) == str(address)
    assert client_key({"client": (str(mapped), 1)}) == str(address)


def test_a_request_without_a_network_peer_counts_as_one_client() -> None:
    assert client_key({"client": None}) == client_key({}) == "unknown"
    assert client_key({"client": ("/run/notifier.sock", 0)}) == "/run/notifier.sock"


async def test_a_correct_key_never_asks_the_storage_and_a_dead_one_costs_no_500(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    settings = {
        "api_keys": f"web:{KEY}",
        "auth_failure_limit": "2/minute",
        "rate_limit_storage": nothing_there,
    }
    async with from_addresses(tmp_path, smtp, "192.0.2.7", **settings) as (client,):
        assert [(await send(client, KEY)).status_code for _ in range(3)] == [202] * 3
        assert "rate_limit.storage_unreachable" not in capsys.readouterr().err
        # a failure asks it, finds it gone, and counts in this process alone
        assert [(await send(client, WRONG)).status_code for _ in range(3)] == [401, 401, 429]
    assert "rate_limit.storage_unreachable" in capsys.readouterr().err


async def test_the_log_remembers_a_bounded_number_of_throttled_addresses() -> None:
    throttle = AuthThrottle(RateLimiter(), RateLimit(count=1, seconds=3600), metrics=Metrics())
    try:
        for n in range(5000):
            scope = {"client": (str(ipaddress.IPv4Address(0xC6336400 + n)), 1)}
            await throttle.failed(scope)
            assert await throttle.failed(scope) > 0
            assert len(throttle._noted) <= 4096
    finally:
        await throttle.close()
