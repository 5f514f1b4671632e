"""End to end over a real uvicorn server."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.processes import free_port, free_ports
from tests.conftest import WELCOME, wait_for
from tests.live import running, service_env, uvicorn_command
from tests.smtp_server import SmtpServer


async def test_202_arrives_before_a_stalling_smtp_server_answers(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["DATA"] = 2.0
    port = free_port()
    env = service_env(tmp_path, smtp.port)
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        client = live.client
        started = time.monotonic()
        response = await client.post("/v1/notifications", json=WELCOME)
        accept_seconds = time.monotonic() - started

        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        assert accept_seconds < 1.0, f"202 took {accept_seconds:.2f} s"
        assert smtp.messages == []

        async def sent() -> bool:
            shown = await client.get(response.headers["location"])
            return bool(shown.json()["status"] == "sent")

        await wait_for(sent, within=15)
        assert len(smtp.messages) == 1
        assert smtp.messages[0].rcpt_tos == ["ada@example.com"]


async def statuses(client: httpx.AsyncClient) -> Counter[str]:
    body = (await client.get("/v1/notifications", params={"limit": 200})).json()
    return Counter(n["status"] for n in body["items"])


async def all_sent(client: httpx.AsyncClient, count: int, within: float = 30) -> None:
    async def check() -> bool:
        return (await statuses(client)).get("sent") == count

    await wait_for(check, within=within)


async def test_kill_9_with_smtp_down_then_restart_delivers_all_200_once(tmp_path: Path) -> None:
    smtp = SmtpServer()
    smtp.port, port = free_ports(2)  # nothing listens on the SMTP port yet
    # SMTP_TIMEOUT long enough that a loaded machine never loses a reply after the data (the
    # one window for a legitimate duplicate), short enough that a killed claim's lease (12x)
    # runs out within the wait below
    env = service_env(
        tmp_path, smtp.port, SMTP_TIMEOUT="1", RETRY_BASE_SECONDS="0.2", RETRY_MAX_SECONDS="0.5"
    )
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        for chunk in range(10):
            responses = await asyncio.gather(
                *(
                    live.client.post(
                        "/v1/notifications", json={**WELCOME, "metadata": {"n": f"{chunk}-{i}"}}
                    )
                    for i in range(20)
                )
            )
            assert {r.status_code for r in responses} == {202}
        live.process.kill()
        assert await live.exited() == -signal.SIGKILL

    await smtp.start()
    try:
        async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
            await all_sent(live.client, 200, within=45)
    finally:
        await smtp.stop()
    assert len(smtp.messages) == 200
    assert set(smtp.copies().values()) == {1}


async def test_two_processes_on_one_database_never_send_twice(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["DATA"] = 0.2
    env = service_env(tmp_path, smtp.port, DELIVERY_CONCURRENCY="2", POLL_INTERVAL="0.1")
    ports = free_ports(2)
    async with (
        running(uvicorn_command(ports[0]), env=env, port=ports[0], log=tmp_path / "a") as a,
        running(uvicorn_command(ports[1]), env=env, port=ports[1], log=tmp_path / "b") as b,
    ):
        for i in range(30):
            for live in (a, b):
                request = {**WELCOME, "metadata": {"n": str(i)}}
                assert (await live.client.post("/v1/notifications", json=request)).is_success
        started = time.monotonic()
        assert (await a.client.get("/healthz")).status_code == 200
        assert time.monotonic() - started < 0.5, "healthz waited for SMTP"
        await all_sent(a.client, 60)
    assert len(smtp.messages) == 60
    assert set(smtp.copies().values()) == {1}


async def test_sigterm_lets_in_flight_sends_finish_and_the_rest_go_after_restart(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["DATA"] = 1.0
    env = service_env(tmp_path, smtp.port, DELIVERY_CONCURRENCY="3", SHUTDOWN_GRACE_SECONDS="5")
    port = free_port()
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        for i in range(12):
            request = {**WELCOME, "metadata": {"n": str(i)}}
            assert (await live.client.post("/v1/notifications", json=request)).is_success

        async def sending() -> bool:
            return (await statuses(live.client)).get("sending", 0) > 0

        await wait_for(sending)
        live.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal to exit with it
        assert await live.exited() == -signal.SIGTERM
    assert "service.stopped" in (tmp_path / "log").read_text()
    in_flight = len(smtp.messages)
    assert in_flight >= 1
    with sqlite3.connect(tmp_path / "live.db") as db:
        left = dict(db.execute("SELECT status, COUNT(*) FROM notifications GROUP BY status"))
    assert left == {"sent": in_flight, "queued": 12 - in_flight}

    smtp.behaviour.stalls.clear()
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        await all_sent(live.client, 12)
    assert len(smtp.messages) == 12
    assert set(smtp.copies().values()) == {1}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_10000_accepted_while_smtp_is_down_are_all_delivered_once_in_flat_memory(
    tmp_path: Path,
) -> None:
    smtp = SmtpServer()
    smtp.port, port = free_ports(2)  # the SMTP server is down
    env = service_env(
        tmp_path,
        smtp.port,
        DELIVERY_CONCURRENCY="16",
        RETRY_BASE_SECONDS="0.5",
        RETRY_MAX_SECONDS="1",
        MAX_ATTEMPTS="1000",
        LOG_LEVEL="WARNING",
    )
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        for batch in range(20):
            requests = [{**WELCOME, "to": [f"u{batch}-{i}@example.com"]} for i in range(500)]
            response = await live.client.post(
                "/v1/notifications/batch", json={"notifications": requests}
            )
            assert response.json()["accepted"] == 500
        baseline = rss_mb(live.process.pid)
        peak = baseline

        await smtp.start()
        try:

            async def drained() -> bool:
                nonlocal peak
                peak = max(peak, rss_mb(live.process.pid))
                return len(smtp.messages) >= 10_000

            await wait_for(drained, within=90)
            await all_sent(live.client, 200)  # the newest page is all sent too
        finally:
            await smtp.stop()
    assert len(smtp.messages) == 10_000
    assert set(smtp.copies().values()) == {1}
    assert peak - baseline < 40, f"RSS grew from {baseline:.0f} MB to {peak:.0f} MB"
