"""Found by trying the service beyond one machine (two API replicas with DELIVERY=off, worker
processes): what a newcomer's set-up ran into, as tests of the real processes."""

from __future__ import annotations

from pathlib import Path

from tests.live import read, service_env, worker_running
from tests.smtp_server import SmtpServer

UNSUBSCRIBE_SECRET = "u" * 32


def worker_env(tmp_path: Path, smtp: SmtpServer, **extra: str) -> dict[str, str]:
    env = service_env(tmp_path, smtp.port, AUTH="off", **extra)
    for name in ("PUBLIC_URL", "UNSUBSCRIBE_SECRET"):
        if name not in extra:
            env.pop(name, None)
    return env


async def test_a_worker_without_public_url_says_its_mail_goes_without_unsubscribe_links(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # The worker builds the mail: started without PUBLIC_URL beside APIs that have it, it sends
    # newsletters without List-Unsubscribe, so its start-up has to say so as the API's does.
    env = worker_env(tmp_path, smtp, UNSUBSCRIBE_SECRET=UNSUBSCRIBE_SECRET)
    log = tmp_path / "worker.log"
    async with worker_running(env=env, log=log):
        assert "unsubscribe.disabled missing=PUBLIC_URL " in read(log)


async def test_a_worker_with_both_unsubscribe_settings_says_nothing_of_it(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    env = worker_env(
        tmp_path,
        smtp,
        PUBLIC_URL="https://notify.example.com",
        UNSUBSCRIBE_SECRET=UNSUBSCRIBE_SECRET,
    )
    log = tmp_path / "worker.log"
    async with worker_running(env=env, log=log):
        assert "unsubscribe.disabled" not in read(log)
