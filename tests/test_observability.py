"""Seeing into it: Prometheus metrics, structured logs, request ids, secrets kept out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import WELCOME
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, attempted, reaches, service


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    for line in metrics.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_metrics_count_notifications_attempts_latency_and_requests(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, api_keys="web:web-secret-key") as client:
        client.headers["Authorization"] = "Bearer web-secret-key"
        location = await accept(client)
        await reaches(client, location, "sent")
        smtp.behaviour.replies["MAIL"] = "451 4.3.0 later"
        await attempted(client, await accept(client))
        await client.get("/v1/notifications/unknown-id")
        text = (await client.get("/metrics")).text

    labels = {"template": "welcome", "caller": "web"}
    assert sample(text, "notifier_notifications_accepted_total", **labels) == 2
    assert sample(text, "notifier_notifications_sent_total", **labels) == 1
    assert sample(text, "notifier_notifications_deferred_total", **labels) >= 1
    assert sample(text, "notifier_delivery_latency_seconds_count", template="welcome") == 1
    assert sample(text, "notifier_smtp_attempts_total", result="2xx") == 1
    assert sample(text, "notifier_smtp_attempts_total", result="4xx") >= 1
    assert sample(text, "notifier_notifications", status="sent") == 1
    route = "/v1/notifications/{notification_id}"
    assert sample(text, "notifier_http_requests_total", route=route, status="404") == 1
    assert (
        sample(text, "notifier_http_requests_total", route="/v1/notifications", status="202") == 2
    )


async def test_json_logs_have_one_event_per_state_change_and_no_secrets(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_context = {"name": "Ada-private-name", "action_url": "https://x.test/token-abc"}
    settings = {
        "log_format": "json",
        "api_keys": "web:web-secret-key",
        "smtp_username": "mailer",
        "smtp_password": "smtp-password-xyz",
    }
    smtp.credentials = ("mailer", "smtp-password-xyz")
    async with service(tmp_path, smtp, **settings) as client:
        client.headers["Authorization"] = "Bearer web-secret-key"
        headers = {"X-Request-ID": "req-123"}
        response = await client.post(
            "/v1/notifications", json={**WELCOME, "context": secret_context}, headers=headers
        )
        assert response.headers["x-request-id"] == "req-123"
        await reaches(client, response.headers["location"], "sent")

    output = capsys.readouterr().err
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    sent = [e for e in events if e["event"] == "notification.sent"]
    assert len(sent) == 1
    assert sent[0]["id"] == response.json()["id"]
    assert (sent[0]["caller"], sent[0]["template"], sent[0]["attempt"]) == ("web", "welcome", 1)
    assert sent[0]["smtp_code"] == 250 and sent[0]["ms"] > 0
    assert sent[0]["request_id"] == "req-123"
    for secret in ("web-secret-key", "smtp-password-xyz", "Ada-private-name", "token-abc"):
        assert secret not in output


async def test_request_id_is_generated_when_missing_or_unsafe(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp) as client:
        generated = (await client.get("/healthz")).headers["x-request-id"]
        unsafe = await client.get("/healthz", headers={"X-Request-ID": "bad id; drop table"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert unsafe.headers["x-request-id"] != "bad id; drop table"


async def test_text_logs_read_as_event_and_fields(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with service(tmp_path, smtp) as client:
        await reaches(client, await accept(client), "sent")
    lines = [line for line in capsys.readouterr().err.splitlines() if "notification.sent" in line]
    assert len(lines) == 1
    assert re.search(r"INFO notification\.sent id=\S+ caller=anonymous template=welcome", lines[0])
