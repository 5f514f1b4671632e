"""The Dockerfile, compose file and .env.example agree with the settings, and the container's
own start command serves the app."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings
from bench.processes import free_port
from tests.live import ROOT, running, service_env
from tests.smtp_server import SmtpServer

SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_dockerfile_runs_slim_as_non_root_with_healthcheck_and_data_volume() -> None:
    assert instruction("FROM")[0].startswith("python:3.11-slim")
    users = instruction("USER")
    assert users and users[-1] not in {"root", "0"}
    assert "/healthz" in instruction("HEALTHCHECK")[0]
    assert json.loads(instruction("VOLUME")[0]) == ["/app/data"]
    # dependencies are installed before the code is copied, so the layer is cached
    steps = [f"{i} {a}" for i, a in dockerfile()]
    install = next(n for n, s in enumerate(steps) if "pip install" in s)
    copy_code = next(n for n, s in enumerate(steps) if s.startswith("COPY app"))
    assert install < copy_code


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (it comes with the dev dependencies)")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_tests_caches_and_data_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".git", ".venv", "tests/", "data/", "**/__pycache__", ".env", "*.db"):
        assert entry in ignored, entry


def test_compose_has_healthchecks_restart_and_waits_for_mailhog() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert "/healthz" in " ".join(services["notifier"]["healthcheck"]["test"])
    depends = services["notifier"]["depends_on"]
    assert depends == {"mailhog": {"condition": "service_healthy"}}


def test_compose_runs_the_service_beside_mailhog() -> None:
    services = compose()["services"]
    assert set(services) == {"notifier", "mailhog"}
    assert services["mailhog"]["image"] == "mailhog/mailhog"
    assert "8025:8025" in services["mailhog"]["ports"]
    notifier = services["notifier"]
    assert notifier["build"] == "."
    env = notifier["environment"]
    assert env["SMTP_HOST"] == "${SMTP_HOST:-mailhog}" and env["SMTP_PORT"] == "${SMTP_PORT:-1025}"
    assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES
    volume = notifier["volumes"][0].split(":")
    assert volume[1] == "/app/data" and volume[0] in compose()["volumes"]
    assert "8000:8000" in notifier["ports"]


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert names == SETTING_NAMES


def test_env_example_values_are_valid_settings(tmp_path: Path) -> None:
    values: dict[str, Any] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            if value:
                values[name.lower()] = value
    Settings(_env_file=None, **values)


async def test_the_containers_start_command_serves_healthz(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    command: list[str] = json.loads(instruction("CMD")[0])
    port = free_port()
    command = [str(port) if part == "8000" else part for part in command]
    env = service_env(tmp_path, smtp.port)
    async with running(command, env=env, port=port, log=tmp_path / "log") as live:
        client = live.client
        response = await client.get("/healthz")
        assert response.status_code == 200
