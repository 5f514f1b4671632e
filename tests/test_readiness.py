"""Readiness and the SMTP probe: our own SMTP mistakes pause delivery and show up in /readyz
(certificate, HELO name, sender, login) without costing attempts; /readyz answers from what
the worker knows, never with a connection of its own, and is 503 only without a database."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import WELCOME, wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, reaches, service, shown
from tests.test_mailer import server_context
from tests.test_observability import sample


async def checks(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    found: dict[str, str] = response.json()["checks"]
    return found


async def paused_with(client: httpx.AsyncClient, words: str) -> dict[str, str]:
    async def paused() -> bool:
        return words in (await checks(client))["delivery"]

    await wait_for(paused)
    return await checks(client)


def tls_server(ca: trustme.CA, security: str, *names: str) -> SmtpServer:
    context = server_context(ca, *names)
    return SmtpServer(
        tls=context if security == "tls" else None,
        starttls=context if security == "starttls" else None,
    )


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_an_untrusted_certificate_pauses_delivery_until_the_ca_is_given(
    tmp_path: Path, security: str
) -> None:
    ca = trustme.CA()
    smtp = await tls_server(ca, security).start()
    try:
        # no SMTP_CA_FILE: the client trusts only the system's authorities, not this one
        async with service(tmp_path, smtp, smtp_security=security) as client:
            location = await accept(client)
            found = await paused_with(client, "certificate is not trusted")
            assert "SMTP_CA_FILE" in found["delivery"]
            assert (await client.get("/readyz")).json()["status"] == "degraded"
            still = await shown(client, location)
            assert (still["status"], still["attempts"]) == ("queued", [])

        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        async with service(tmp_path, smtp, smtp_security=security, smtp_ca_file=ca_file) as client:
            done = await reaches(client, location, "sent")
            assert [a["outcome"] for a in done["attempts"]] == ["sent"]
    finally:
        await smtp.stop()


async def test_a_certificate_for_another_name_pauses_delivery(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    smtp = await tls_server(ca, "tls", "mail.example.net").start()
    try:
        async with service(tmp_path, smtp, smtp_security="tls", smtp_ca_file=ca_file) as client:
            location = await accept(client)
            found = await paused_with(client, "certificate is not trusted")
            assert "127.0.0.1" in found["delivery"] and "SMTP_HOST" in found["delivery"]
            assert (await shown(client, location))["attempts"] == []
    finally:
        await smtp.stop()


async def test_tls_spoken_to_a_plaintext_port_pauses_delivery(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, smtp_security="tls") as client:
        location = await accept(client)
        found = await paused_with(client, "TLS with the SMTP server failed")
        assert "SMTP_SECURITY" in found["delivery"]
        assert (await shown(client, location))["attempts"] == []


async def test_probes_of_an_untrusted_server_back_off_whatever_the_traffic(
    tmp_path: Path,
) -> None:
    smtp = await tls_server(trustme.CA(), "tls").start()
    try:
        async with service(tmp_path, smtp, smtp_security="tls", poll_interval=0.05) as client:
            await accept(client)
            await paused_with(client, "certificate is not trusted")
            # Three seconds of steady traffic: new mail and readiness calls wake the worker, but
            # only its schedule may open a connection. (Measuring a rate: the sleep is the window.)
            window_end = time.monotonic() + 3
            while time.monotonic() < window_end:
                await accept(client)
                await client.get("/readyz")
                await asyncio.sleep(0.05)
            handshakes = list(smtp.connected_at)
    finally:
        await smtp.stop()
    # With a first wait of 0.05 s, doubling: about 6 in 3 s (the old reconnect every second
    # kept growing linearly, 34 in 25 s against Postfix).
    assert len(handshakes) <= 8, handshakes
    gaps = [later - earlier for earlier, later in itertools.pairwise(handshakes)]
    assert gaps[-1] >= 4 * gaps[0], gaps


def refuse_names_without_a_dot(name: str) -> str | None:
    if "." in name:
        return None
    return f"504 5.5.2 <{name}>: Helo command rejected: need fully-qualified hostname"


async def test_a_refused_helo_name_shows_in_the_probe_not_in_failed_mail(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.rules["HELO"] = refuse_names_without_a_dot
    async with service(tmp_path, smtp, smtp_local_hostname="localhost") as client:
        location = await accept(client)
        found = await paused_with(client, "refuses our name 'localhost'")
        assert "SMTP_LOCAL_HOSTNAME" in found["delivery"]
        assert (await shown(client, location))["attempts"] == []

    async with service(tmp_path, smtp, smtp_local_hostname="notifier.example.com") as client:
        await reaches(client, location, "sent")
    assert smtp.recorder.helo_names[-1] == "notifier.example.com"
    assert smtp.messages[0].rcpt_tos == ["ada@example.com"]


async def test_a_helo_name_refused_only_at_rcpt_shows_in_the_probe(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # Postfix's default (smtpd_delay_reject = yes): HELO restrictions answer at RCPT TO.
    def refuse_after_a_bad_helo(address: str) -> str | None:
        return refuse_names_without_a_dot(smtp.recorder.helo_names[-1])

    smtp.behaviour.rules["RCPT"] = refuse_after_a_bad_helo
    async with service(tmp_path, smtp, smtp_local_hostname="localhost") as client:
        location = await accept(client)
        found = await paused_with(client, "Helo command rejected")
        assert "SMTP_LOCAL_HOSTNAME" in found["delivery"]
        assert (await shown(client, location))["attempts"] == []
    assert smtp.messages == []


async def test_a_sender_the_login_may_not_use_pauses_until_the_return_path_is_set(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    def only_bounces(address: str) -> str | None:
        ok = address == "bounces@example.com"
        return None if ok else "553 5.7.1 Sender address rejected: not owned by user mailer"

    smtp.behaviour.rules["MAIL"] = only_bounces
    async with service(tmp_path, smtp) as client:
        location = await accept(client)
        found = await paused_with(client, "refuses our sender <noreply@example.com>")
        assert "SMTP_ENVELOPE_FROM" in found["delivery"]
        assert (await shown(client, location))["attempts"] == []

    async with service(tmp_path, smtp, smtp_envelope_from="bounces@example.com") as client:
        await reaches(client, location, "sent")
    assert smtp.messages[0].mail_from == "bounces@example.com"
    assert smtp.messages[0].message["From"] == "Notifier <noreply@example.com>"


async def test_fifty_readiness_calls_cost_at_most_one_login(tmp_path: Path) -> None:
    smtp = await SmtpServer(credentials=("mailer", "new-password")).start()
    try:
        settings = {"smtp_username": "mailer", "smtp_password": "old-password"}
        async with service(tmp_path, smtp, retry_base_seconds=30, **settings) as client:
            await paused_with(client, "authentication refused")
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
            assert {answer.status_code for answer in answers} == {200}
            assert all("535" in a.json()["checks"]["smtp"] for a in answers)
        # the start-up probe's, with one mechanism only: PLAIN and LOGIN are offered
        assert smtp.auth_attempts == ["PLAIN"]
    finally:
        await smtp.stop()


async def test_readiness_probes_once_per_interval_whatever_the_call_rate(tmp_path: Path) -> None:
    smtp = await SmtpServer(credentials=("mailer", "s3cret")).start()
    try:
        settings = {"smtp_username": "mailer", "smtp_password": "s3cret"}
        async with service(tmp_path, smtp, smtp_probe_interval=1, **settings) as client:
            await wait_for(lambda: len(smtp.auth_attempts) == 1)  # the start-up probe
            started = time.monotonic()
            await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
            assert len(smtp.auth_attempts) == 1  # its news is fresh

            await wait_for(lambda: time.monotonic() - started > 1.2)  # the news grows old
            await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
            await wait_for(lambda: len(smtp.auth_attempts) == 2)
            assert (await client.get("/readyz")).json()["status"] == "ready"
            assert len(smtp.connected_at) == 2
    finally:
        await smtp.stop()


async def test_an_smtp_outage_keeps_readyz_200_and_shows_in_body_and_metrics(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp) as client:
        await reaches(client, await accept(client), "sent")
        text = (await client.get("/metrics")).text
        assert sample(text, "notifier_smtp_up") == 1
        assert sample(text, "notifier_smtp_last_contact_timestamp_seconds") > 0

        smtp.behaviour.drop_at = "MAIL"  # connections open, then die without a reply
        await accept(client)

        async def waiting() -> bool:
            return "waiting for the SMTP server" in (await checks(client))["delivery"]

        await wait_for(waiting)
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
        assert "connection failed" in ready.json()["checks"]["smtp"]
        assert ready.json()["smtp_last_contact"] is not None
        text = (await client.get("/metrics")).text
        assert sample(text, "notifier_smtp_up") == 0
        assert sample(text, "notifier_delivery_paused", reason="unreachable") == 1
        assert sample(text, "notifier_delivery_paused", reason="settings") == 0


async def test_a_settings_fault_shows_in_metrics(tmp_path: Path) -> None:
    smtp = await SmtpServer(credentials=("mailer", "new-password")).start()
    try:
        settings = {"smtp_username": "mailer", "smtp_password": "old-password"}
        async with service(tmp_path, smtp, **settings) as client:
            await paused_with(client, "authentication refused")
            text = (await client.get("/metrics")).text
        assert sample(text, "notifier_delivery_paused", reason="settings") == 1
        assert sample(text, "notifier_smtp_up") == 0
    finally:
        await smtp.stop()


async def test_readyz_is_503_only_when_the_database_is_unusable(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp) as client:
        assert (await client.post("/v1/notifications", json=WELCOME)).status_code == 202
        assert (await client.get("/readyz")).status_code == 200
        # another process moves the table away: the file is no longer one we can use
        with sqlite3.connect(tmp_path / "notifications.db", timeout=5) as other:
            other.execute("ALTER TABLE notifications RENAME TO moved_away")
        other.close()
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "not ready")
        assert "no such table" in ready.json()["checks"]["database"]
