"""The Dockerfile, compose file and .env.example agree with the settings, and the container's
own start command serves the app."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.markers import Marker
from pydantic import ValidationError

from app.settings import Settings, load_settings
from bench.processes import free_port
from tests.compose import ComposeError, container_env, interpolate, read_env_file, render
from tests.conftest import WELCOME, wait_for
from tests.image import build, dockerfile, normalise
from tests.live import ROOT, read, running, service_env, start
from tests.smtp_server import SmtpServer

SETTING_NAMES = {name.upper() for name in Settings.model_fields}


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
    notifier = services["notifier"]
    assert notifier["build"] == "."
    env = notifier["environment"]
    assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES
    volume = notifier["volumes"][0].split(":")
    assert volume[1] == "/app/data" and volume[0] in compose()["volumes"]
    assert env["DATABASE_URL"] == "sqlite:////app/data/notifications.db"


def stack(tmp_path: Path, dotenv: str | None) -> Path:
    """A copy of the compose project, with `dotenv` as its .env (or none)."""
    project = tmp_path / "stack"
    project.mkdir(exist_ok=True)
    shutil.copy(ROOT / "docker-compose.yml", project)
    (project / ".env").unlink(missing_ok=True)
    if dotenv is not None:
        (project / ".env").write_text(dotenv)
    return project


ENV_EXAMPLE = (ROOT / ".env.example").read_text()
# where the stack sends mail and keeps its data: the stack's own, whatever .env says
STACK_OWN = {
    "SMTP_HOST": "mailhog",
    "SMTP_PORT": "1025",
    "SMTP_SECURITY": "none",
    "SMTP_USERNAME": "",
    "SMTP_PASSWORD": "",
    "SMTP_CA_FILE": "",
    "DATABASE_URL": "sqlite:////app/data/notifications.db",
    "TEMPLATES_DIR": "/app/templates",
}


@pytest.mark.parametrize("dotenv", [None, ENV_EXAMPLE], ids=["no .env", ".env from .env.example"])
def test_compose_stack_sends_to_its_mailhog_with_or_without_a_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dotenv: str | None
) -> None:
    env = container_env(stack(tmp_path, dotenv), "notifier", shell={})
    assert {name: env[name] for name in STACK_OWN} == STACK_OWN
    assert env["AUTH"] == "off"
    # and the service reads it as valid settings: auth off by choice, SMTP to MailHog
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # the image holds no .env
    settings = load_settings()
    assert (settings.smtp_host, settings.auth, settings.api_keys) == ("mailhog", "off", [])


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${SET:-d}/${EMPTY:-d}/${UNSET:-d}", "x/d/d"),
        ("${SET-d}/${EMPTY-d}/${UNSET-d}", "x//d"),
        ("${SET:+r}/${EMPTY:+r}/${UNSET:+r}", "r//"),
        ("${SET+r}/${EMPTY+r}/${UNSET+r}", "r/r/"),
        ("${UNSET:-${EMPTY:-${SET}}}", "x"),
        ("$SET-$$SET-${UNSET}", "x-$SET-"),
    ],
)
def test_compose_interpolation_follows_the_specification(template: str, expected: str) -> None:
    assert interpolate(template, {"SET": "x", "EMPTY": ""}) == expected


@pytest.mark.parametrize("template", ["${UNSET:?needed}", "${EMPTY:?needed}", "${", "$-", "${A B}"])
def test_compose_interpolation_refuses_what_compose_refuses(template: str) -> None:
    with pytest.raises(ComposeError):
        interpolate(template, {"EMPTY": ""})


def test_dotenv_lines_read_as_compose_reads_them(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\n"
        "PLAIN=a b  # trailing comment\n"
        "export EXPORTED=1\n"
        "SINGLE='${PLAIN} # kept'\n"
        'DOUBLE="${PLAIN}\\tx # kept"\n'
        "EMPTY=\n"
        "REF=${PLAIN:-none}\n"
    )
    assert read_env_file(tmp_path / ".env", {}) == {
        "PLAIN": "a b",
        "EXPORTED": "1",
        "SINGLE": "${PLAIN} # kept",
        "DOUBLE": "a b\tx # kept",
        "EMPTY": "",
        "REF": "a b",
    }


_ENV_VALUE = st.text(
    st.characters(codec="ascii", categories=["L", "N", "P", "S"], exclude_characters="$#'\"\\`"),
    max_size=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dotenv=st.dictionaries(st.sampled_from(sorted(SETTING_NAMES)), _ENV_VALUE),
    shell=st.dictionaries(st.sampled_from(sorted(SETTING_NAMES)), _ENV_VALUE),
)
def test_no_dotenv_or_shell_variable_moves_the_stacks_smtp_server_or_data(
    tmp_path_factory: pytest.TempPathFactory, dotenv: dict[str, str], shell: dict[str, str]
) -> None:
    text = "".join(f"{name}={value}\n" for name, value in dotenv.items())
    project = stack(tmp_path_factory.mktemp("prop"), text)
    env = container_env(project, "notifier", shell=shell)
    assert {name: env[name] for name in STACK_OWN} == STACK_OWN
    config, _ = render(project, shell)
    assert published(config) == {("notifier", "127.0.0.1"), ("mailhog", "127.0.0.1")}


def published(config: dict[str, Any]) -> set[tuple[str, str]]:
    """(service, host address) of every published port; a port without an address would be
    published on every interface."""
    found = set()
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            parts = str(port).rsplit(":", 2)
            assert len(parts) == 3 and parts[0], f"{name} publishes {port} on every interface"
            found.add((name, parts[0]))
    return found


def test_compose_publishes_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    config, _ = render(stack(tmp_path, None), shell={})
    assert config["services"]["notifier"]["ports"] == ["127.0.0.1:8000:8000"]
    assert config["services"]["mailhog"]["ports"] == ["127.0.0.1:8025:8025"]
    exposed = "NOTIFIER_BIND_ADDRESS=0.0.0.0\nAUTH=on\nAPI_KEYS=web:web-secret-key\n"
    config, _ = render(stack(tmp_path, exposed), shell={})
    assert published(config) == {("notifier", "0.0.0.0"), ("mailhog", "127.0.0.1")}
    env = container_env(stack(tmp_path, exposed), "notifier", shell={})
    assert (env["AUTH"], env["API_KEYS"]) == ("on", "web:web-secret-key")


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert names == SETTING_NAMES


def test_env_example_values_are_valid_settings_once_auth_is_chosen(tmp_path: Path) -> None:
    values: dict[str, Any] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            if value:
                values[name.lower()] = value
    # copied as it is, it does not open the service: the choice is the reader's
    with pytest.raises(ValidationError, match="API_KEYS is empty"):
        Settings(_env_file=None, **values)
    Settings(_env_file=None, **values, auth="off")
    Settings(_env_file=None, **values, api_keys="web:web-secret-key")


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


async def test_the_containers_start_command_refuses_to_start_without_keys_or_auth_off(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    command: list[str] = json.loads(instruction("CMD")[0])
    port = free_port()
    command = [str(port) if part == "8000" else part for part in command]
    env = service_env(tmp_path, smtp.port)
    del env["AUTH"]
    log = tmp_path / "log"
    process = start(command, env=env, log=log)
    try:
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code != 0
    assert "AUTH: " in read(log) and "set AUTH=off" in read(log), read(log)


def readme_curl(marker: str) -> list[str]:
    """The README's first curl command with `marker` in its URL and a body, as its words."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    for block in blocks:
        words = shlex.split(block, comments=True)
        starts = [n for n, word in enumerate(words) if word == "curl"]
        for begin, end in itertools.pairwise([*starts, len(words)]):
            command = words[begin:end]
            if "-d" in command and any(marker in word for word in command):
                return command
    raise AssertionError(f"no curl command with {marker!r} and a body in the README")


@pytest.mark.parametrize("dotenv", [None, ENV_EXAMPLE], ids=["no .env", ".env from .env.example"])
async def test_the_readmes_curl_example_works_against_the_compose_stack(
    tmp_path: Path, smtp: SmtpServer, dotenv: str | None
) -> None:
    words = readme_curl("/v1/notifications")
    url = httpx.URL(next(word for word in words if word.startswith("http")))
    headers = dict(words[n + 1].split(": ", 1) for n, word in enumerate(words) if word == "-H")
    body = words[words.index("-d") + 1]
    assert "Authorization" not in headers
    # the URL reaches the container's port 8000 through the stack's loopback publication
    config, _ = render(stack(tmp_path, dotenv), shell={})
    host, published_port, container_port = config["services"]["notifier"]["ports"][0].split(":")
    assert (url.host, url.port) == ("localhost", int(published_port)) and host == "127.0.0.1"
    command: list[str] = json.loads(instruction("CMD")[0])
    assert command[command.index("--port") + 1] == container_port
    # the container's command with the stack's environment; what lies only inside the image
    # (MailHog, /app) stands in for by its local twin
    env = container_env(stack(tmp_path, dotenv), "notifier", shell={})
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'stack.db'}",
        TEMPLATES_DIR=str(ROOT / "templates"),
    )
    port = free_port()
    command = [str(port) if part == container_port else part for part in command]
    async with running(command, env=env, port=port, log=tmp_path / "log") as live:
        response = await live.client.post(url.path, content=body, headers=headers)
        assert response.status_code == 202, response.text
        await wait_for(lambda: len(smtp.messages) == 1)


def locked(lock: Path) -> dict[str, str]:
    """Name (normalised) to version of each pin in a lock file that holds for this Python (the
    image's is the same): a pin may hold only where the marker after its `;` is true."""
    pins = re.findall(
        r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\\n]+))?",
        lock.read_text(),
        flags=re.M,
    )
    return {
        normalise(name): version
        for name, version, marker in pins
        if not marker.strip() or Marker(marker.strip()).evaluate()
    }


def test_the_dependency_layer_installs_the_runtime_lock_and_nothing_of_ours() -> None:
    steps = [f"{i} {a}" for i, a in dockerfile()]
    layer = steps[: next(n for n, s in enumerate(steps) if s.startswith("COPY app"))]
    installs = [s for s in layer if "pip install" in s]
    assert installs == [
        "RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/runtime.txt"
    ]
    # nothing that could be built is in the context yet: only the lock is copied before
    assert [s for s in layer if s.startswith("COPY")] == [
        "COPY requirements/runtime.txt requirements/"
    ]


async def test_the_image_holds_exactly_the_locked_packages_and_serves_from_them(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    image = await asyncio.to_thread(build, tmp_path / "image")
    assert image.skipped == [s for s in image.skipped if "useradd" in s]
    # what the dependency layer installed: the lock, all of it, and nothing else
    assert image.distributions() == locked(ROOT / "requirements" / "runtime.txt")
    check = await asyncio.create_subprocess_exec(
        image.bin / "pip", "check", stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    report, _ = await check.communicate()
    assert check.returncode == 0, report.decode()
    assert image.build_output() == []
    assert image.workdir is not None
    assert sorted(p.name for p in image.workdir.iterdir()) == ["app", "requirements", "templates"]
    # and the container's command serves with that environment alone
    port = free_port()
    command = [str(port) if part == "8000" else part for part in image.command]
    env = {
        **service_env(tmp_path, smtp.port),
        **image.env,
        "PATH": f"{image.bin}{os.pathsep}{os.environ['PATH']}",
        "TEMPLATES_DIR": "templates",
    }
    async with running(
        command, env=env, port=port, log=tmp_path / "log", cwd=image.workdir
    ) as live:
        assert (await live.client.get("/docs")).status_code == 200
        response = await live.client.post("/v1/notifications", json=WELCOME)
        assert response.status_code == 202, response.text
        await wait_for(lambda: len(smtp.messages) == 1)
