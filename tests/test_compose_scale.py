"""compose.scale.yml, the stack beyond one process: its structure read as Compose reads it, and
each container's command run outside a container with the stack's environment (what lies only
inside the stack, PostgreSQL and MailHog, stands in for by a local twin)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from app.cli import parser
from app.settings import Settings
from app.store.url import parse_database_url
from bench.processes import free_port
from tests.compose import container_env, render
from tests.conftest import WELCOME, wait_for
from tests.image import dockerfile
from tests.live import ROOT, notifier, running, worker_running
from tests.smtp_server import SmtpServer

FILE = "compose.scale.yml"
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
# the rate limit's storage, shared by the replicas: a setting of the shared rate limit
OWN_SERVICES = ("migrate", "api", "worker")


def project(tmp_path: Path, dotenv: str | None = None) -> Path:
    folder = tmp_path / "stack"
    folder.mkdir(exist_ok=True)
    shutil.copy(ROOT / FILE, folder)
    (folder / ".env").unlink(missing_ok=True)
    if dotenv is not None:
        (folder / ".env").write_text(dotenv)
    return folder


def config(tmp_path: Path, dotenv: str | None = None) -> dict[str, Any]:
    rendered, _ = render(project(tmp_path, dotenv), shell={}, file=FILE)
    return rendered


def command_of(service: dict[str, Any]) -> list[str]:
    """What the container runs: its `command`, or the image's CMD."""
    if "command" in service:
        command: list[str] = service["command"]
        return command
    [cmd] = [args for instruction, args in dockerfile() if instruction == "CMD"]
    image_command: list[str] = json.loads(cmd)
    return image_command


def test_the_stack_runs_postgres_redis_a_migration_two_apis_two_workers_and_mailhog(
    tmp_path: Path,
) -> None:
    services = config(tmp_path)["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker", "mailhog"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"].split(":")[0] == "redis"
    assert services["mailhog"]["image"] == "mailhog/mailhog"
    for name in OWN_SERVICES:
        assert services[name]["build"] == "."
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    # PostgreSQL keeps its data in a named volume of the stack
    volume, path = services["postgres"]["volumes"][0].split(":")
    assert volume in config(tmp_path)["volumes"] and path == "/var/lib/postgresql/data"


def test_the_migration_runs_once_before_the_apis_and_workers(tmp_path: Path) -> None:
    services = config(tmp_path)["services"]
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert services["worker"]["depends_on"]["mailhog"] == {"condition": "service_healthy"}
    assert services["api"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_every_long_running_service_has_a_healthcheck_of_its_own_kind(tmp_path: Path) -> None:
    services = config(tmp_path)["services"]
    checks = {
        name: " ".join(service["healthcheck"]["test"])
        for name, service in services.items()
        if name != "migrate"
    }
    assert checks["postgres"].startswith("CMD pg_isready")
    assert checks["redis"] == "CMD redis-cli ping"
    assert "/healthz" in checks["api"]
    assert checks["worker"] == "CMD python -m app health"
    assert services["migrate"]["healthcheck"] == {"disable": True}
    for name, service in services.items():
        if name != "migrate":
            assert service["restart"] == "unless-stopped", name


def test_every_command_is_one_the_notifier_cli_knows(tmp_path: Path) -> None:
    services = config(tmp_path)["services"]
    commands = [command_of(services[name]) for name in OWN_SERVICES]
    commands.append(services["worker"]["healthcheck"]["test"][1:])
    for command in commands:
        if command[:3] == ["python", "-m", "app"]:
            parser().parse_args(command[3:])  # exits 2 on an unknown command or option
        else:
            assert command[:2] == ["uvicorn", "app.main:app"], command
    assert command_of(services["migrate"])[3:] == ["migrate"]
    assert command_of(services["worker"])[3:] == ["worker"]


def test_apis_only_accept_and_everything_is_on_loopback(tmp_path: Path) -> None:
    for dotenv in (None, "AUTH=on\nAPI_KEYS=web:web-secret-key\nPOSTGRES_PASSWORD=s3cret\n"):
        services = config(tmp_path, dotenv)["services"]
        published = {
            name: [str(port) for port in service.get("ports", [])]
            for name, service in services.items()
        }
        assert published == {
            "postgres": [],
            "redis": [],
            "migrate": [],
            "api": ["127.0.0.1:8001-8002:8000"],  # one host port per replica
            "worker": [],
            "mailhog": ["127.0.0.1:8025:8025"],
        }
    env = {name: container_env(project(tmp_path), name, {}, file=FILE) for name in OWN_SERVICES}
    assert env["api"]["DELIVERY"] == "off"
    assert "DELIVERY" not in env["worker"]  # a worker delivers whatever the setting says
    for name, values in env.items():
        assert set(values) <= SETTING_NAMES, name
        assert values["AUTH"] == "off"
        url = parse_database_url(values["DATABASE_URL"])
        assert url.backend == "postgresql" and "@postgres:5432/" in url.url
        assert values["RATE_LIMIT_STORAGE"] == "redis://redis:6379/0"
        assert values["SMTP_HOST"] == "mailhog"


def test_keys_and_the_database_password_come_from_the_dotenv(tmp_path: Path) -> None:
    dotenv = "AUTH=on\nAPI_KEYS=web:web-secret-key\nPOSTGRES_PASSWORD=s3cret\n"
    stack = project(tmp_path, dotenv)
    api = container_env(stack, "api", {}, file=FILE)
    assert (api["AUTH"], api["API_KEYS"]) == ("on", "web:web-secret-key")
    assert ":s3cret@postgres:" in api["DATABASE_URL"]
    postgres = config(tmp_path, dotenv)["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "s3cret"


def local_twin(env: dict[str, str], tmp_path: Path, smtp: SmtpServer) -> dict[str, str]:
    """A container's environment with what lies only inside the stack replaced by its local
    twin: the SMTP server of the test, a database file, the templates of this checkout."""
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'stack.db'}",
        "RATE_LIMIT_STORAGE": "memory://",  # one API here: nothing to share
        "TEMPLATES_DIR": str(ROOT / "templates"),
        "ALLOWED_SENDERS": "@example.com",
        "POLL_INTERVAL": "0.1",
    }


@pytest.mark.slow
async def test_the_stacks_commands_migrate_accept_deliver_and_report_health(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    stack = project(tmp_path)
    services = config(tmp_path)["services"]
    env = {
        name: local_twin(container_env(stack, name, {}, file=FILE), tmp_path, smtp)
        for name in OWN_SERVICES
    }
    migrate = command_of(services["migrate"])
    code, output = await notifier(*migrate[3:], env=env["migrate"])
    assert code == 0, output
    health = services["worker"]["healthcheck"]["test"][1:]
    assert (await notifier(*health[3:], env=env["worker"]))[0] == 1  # no worker yet

    port = free_port()
    api = [str(port) if part == "8000" else part for part in command_of(services["api"])]
    assert command_of(services["worker"]) == ["python", "-m", "app", "worker"]  # worker_running's
    async with (
        running(api, env=env["api"], port=port, log=tmp_path / "api") as live,
        worker_running(env=env["worker"], log=tmp_path / "worker"),
    ):
        code, output = await notifier(*health[3:], env=env["worker"])
        assert code == 0, output
        response = await live.client.post("/v1/notifications", json=WELCOME)
        assert response.status_code == 202, response.text
        await wait_for(lambda: len(smtp.messages) == 1)
