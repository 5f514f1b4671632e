"""The keys file read again by a running uvicorn process, under load: on change and on SIGHUP,
no request fails because of it; `notifier keys new` makes keys that file takes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from app.api.api_keys import identify
from app.api.keys_file import parse_keys
from app.settings import Settings
from bench.processes import free_port
from tests.conftest import WELCOME, wait_for
from tests.keys import bearer, table, write_keys
from tests.live import notifier, read, running, service_env, uvicorn_command
from tests.smtp_server import SmtpServer

STEADY = "steady-secret-key"


async def load(client: httpx.AsyncClient, stop: asyncio.Event) -> list[int]:
    """Accept notifications with a key every version of the file keeps, until `stop`."""
    codes = []
    while not stop.is_set():
        response = await client.post("/v1/notifications", json=WELCOME, headers=bearer(STEADY))
        codes.append(response.status_code)
    return codes


async def answers(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v1/notifications?limit=1", headers=bearer(key))).status_code


@pytest.mark.slow
async def test_replacing_the_keys_file_under_load_drops_no_request(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    path = write_keys(
        tmp_path / "keys.toml", table("steady", STEADY), table("old", "old-secret-key")
    )
    port, log = free_port(), tmp_path / "log"
    env = service_env(tmp_path, smtp.port, API_KEYS_FILE=str(path))
    async with running(uvicorn_command(port), env=env, port=port, log=log) as live:
        stop = asyncio.Event()
        workers = [asyncio.create_task(load(live.client, stop)) for _ in range(4)]
        await wait_for(lambda: len(smtp.messages) >= 5, within=10)  # the load runs first

        # a malformed file is refused, and the keys in force stay
        write_keys(path, table("steady", STEADY), '[[keys]]\nname = "new"\n')
        await wait_for(lambda: "keys.reload_failed" in read(log), within=10)
        assert await answers(live.client, "old-secret-key") == 200

        write_keys(path, table("steady", STEADY), table("new", "new-secret-key"))

        async def swapped() -> bool:
            return await answers(live.client, "old-secret-key") == 401

        await wait_for(swapped, within=10)
        assert await answers(live.client, "new-secret-key") == 200
        stop.set()
        codes = [code for worker in workers for code in await worker]
    assert len(codes) > 20 and set(codes) == {202}
    assert "line 5" in read(log) and "secret-key" not in read(log)


@pytest.mark.slow
async def test_sighup_reads_a_keys_file_whose_change_a_look_at_it_would_miss(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # same size, inode and modification time: only SIGHUP can tell the service
    path = write_keys(tmp_path / "keys.toml", table("a", "first-secret-key"))
    before = os.stat(path)
    port, log = free_port(), tmp_path / "log"
    env = service_env(tmp_path, smtp.port, API_KEYS_FILE=str(path))
    async with running(uvicorn_command(port), env=env, port=port, log=log) as live:
        path.write_text(table("a", "other-secret-key"))  # in place: the same inode
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        await asyncio.sleep(2.5)  # two looks at the file pass; they must not notice
        assert await answers(live.client, "first-secret-key") == 200
        live.process.send_signal(signal.SIGHUP)

        async def swapped() -> bool:
            return await answers(live.client, "other-secret-key") == 200

        await wait_for(swapped, within=10)
        assert await answers(live.client, "first-secret-key") == 401
        assert live.process.poll() is None  # SIGHUP did not end it
        live.process.send_signal(signal.SIGTERM)
        assert await live.exited() == -signal.SIGTERM  # uvicorn's own handler still works


async def test_keys_new_prints_a_fresh_key_and_the_table_that_takes_it(tmp_path: Path) -> None:
    env = service_env(tmp_path, 25)
    outputs = [await notifier("keys", "new", "billing", env=env) for _ in range(2)]
    keys = []
    for code, output in outputs:
        assert code == 0, output
        key, _, pasted = output.partition("\n")
        assert len(key) >= 40 and key not in pasted
        settings = Settings(_env_file=None, auth="off")
        [parsed] = parse_keys(
            pasted,
            source="pasted",
            allowed_senders=settings.allowed_senders,
            mail_from=settings.mail_from,
        )
        assert parsed.name == "billing" and parsed.caller.templates is None
        assert identify([parsed], key) == parsed.caller
        keys.append(key)
    assert keys[0] != keys[1]


async def test_keys_new_refuses_a_name_the_keys_file_would_refuse(tmp_path: Path) -> None:
    code, output = await notifier("keys", "new", "two words", env=service_env(tmp_path, 25))
    assert code == 2 and "letters, digits" in output
