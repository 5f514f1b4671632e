"""Webhooks over real processes: an event written with its state change outlives a `kill -9`
of the service, and `notifier worker` processes deliver events as the API process does."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from bench.processes import free_port
from tests.conftest import WELCOME, wait_for
from tests.live import running, service_env, uvicorn_command, worker_running
from tests.smtp_server import SmtpServer
from tests.test_accepting import rfc3339
from tests.test_live import statuses
from tests.test_webhooks import SECRET
from tests.webhook_receiver import Receiver


def hooked_env(
    tmp_path: Path, smtp: SmtpServer, receiver: Receiver, **extra: str
) -> dict[str, str]:
    return service_env(
        tmp_path,
        smtp.port,
        WEBHOOK_ALLOW_HOSTS=f"127.0.0.1:{receiver.port}",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_RETRY_BASE_SECONDS="0.1",
        WEBHOOK_RETRY_MAX_SECONDS="0.3",
        POLL_INTERVAL="0.1",
        **extra,
    )


async def test_kill_9_right_after_the_state_changes_and_the_events_still_arrive_after_restart(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    receiver = Receiver()
    receiver.reserve_port()  # down: nothing can take the events before the kill
    env = hooked_env(tmp_path, smtp, receiver)
    port = free_port()
    request = {**WELCOME, "callback_url": receiver.url}
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        for i in range(5):
            accepted = await live.client.post(
                "/v1/notifications", json={**request, "metadata": {"n": str(i)}}
            )
            assert accepted.status_code == 202

        async def all_sent() -> bool:
            return (await statuses(live.client)).get("sent") == 5

        await wait_for(all_sent, within=20)
        live.process.kill()  # the moment the last one is shown sent
        assert await live.exited() == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "live.db") as db:
        owed = db.execute("SELECT type, status FROM webhook_events").fetchall()
    db.close()
    assert owed == [("notification.sent", "pending")] * 5

    await receiver.start()
    try:
        async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log"):
            await wait_for(lambda: len(receiver.delivered) >= 5, within=20)
    finally:
        await receiver.stop()
    events = [hit.event for hit in receiver.delivered]
    assert len({e["id"] for e in events}) == 5
    assert {e["type"] for e in events} == {"notification.sent"}
    assert sorted(e["notification"]["metadata"]["n"] for e in events) == list("01234")
    assert all(hit.verifies(SECRET) for hit in receiver.delivered)


async def test_a_worker_process_delivers_the_events_of_what_the_api_process_changed(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    receiver = await Receiver().start()
    env = hooked_env(tmp_path, smtp, receiver, DELIVERY="off")
    port = free_port()
    try:
        async with (
            running(uvicorn_command(port), env=env, port=port, log=tmp_path / "api") as api,
            worker_running(env=env, log=tmp_path / "worker"),
        ):
            hooked = {**WELCOME, "callback_url": receiver.url}
            sent = await api.client.post("/v1/notifications", json=hooked)
            later = await api.client.post(
                "/v1/notifications", json={**hooked, "send_at": rfc3339(86400)}
            )
            cancelled = await api.client.post(f"{later.headers['location']}/cancel")
            assert cancelled.status_code == 200  # the API process wrote this event
            await wait_for(lambda: len(receiver.delivered) >= 2, within=20)
            told = {
                hit.event["notification"]["id"]: hit.event["type"] for hit in receiver.delivered
            }
    finally:
        await receiver.stop()
    assert told == {
        sent.json()["id"]: "notification.sent",
        later.json()["id"]: "notification.cancelled",
    }
    assert "webhook.delivered" in (tmp_path / "worker").read_text()
