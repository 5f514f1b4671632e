"""End to end over a real uvicorn server."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import WELCOME, wait_for
from tests.live import free_port, running, service_env, uvicorn_command
from tests.smtp_server import SmtpServer


async def test_202_arrives_before_a_stalling_smtp_server_answers(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["DATA"] = 2.0
    port = free_port()
    env = service_env(tmp_path, smtp.port)
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as client:
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
