"""What `docker compose` would hand a container, worked out without Docker.

Implements the parts of the Compose specification the stack uses, as the specification states
them: the `.env` file format, variable interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+other}`, `${VAR+other}`, `$$`,
nested in defaults), the shell environment winning over `.env` for interpolation, and a
service's `environment` winning over its `env_file`s. Anything outside that raises rather
than being guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_ASSIGNMENT = re.compile(r"(?:export\s+)?([_A-Za-z][_A-Za-z0-9.-]*)\s*=(.*)")
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


class ComposeError(ValueError):
    """Compose would refuse this file or value."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_braced(text[i + 2 : end], env))
            i = end + 1
        elif match := _NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            raise ComposeError(f"invalid interpolation format in {text!r}")
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ComposeError(f"unclosed ${{ in {text!r}")


def _braced(expression: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(expression)
    if match is None:
        raise ComposeError(f"invalid interpolation format: ${{{expression}}}")
    name, rest = match.group(), expression[match.end() :]
    value = env.get(name)
    for operator in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(operator):
            argument = rest[len(operator) :]
            break
    else:
        if rest:
            raise ComposeError(f"invalid interpolation format: ${{{expression}}}")
        return value or ""
    missing = value is None or (operator.startswith(":") and value == "")
    if operator.endswith("-"):
        return interpolate(argument, env) if missing else str(value)
    if operator.endswith("?"):
        if missing:
            raise ComposeError(f"required variable {name} is missing a value: {argument}")
        return str(value)
    return "" if missing else interpolate(argument, env)


def read_env_file(path: Path, env: Mapping[str, str]) -> dict[str, str]:
    """A `.env` or `env_file`: KEY=VALUE lines; '#' comments; single quotes literal; double
    quotes with escapes; unquoted values trimmed, ' #' starts a comment, `${}` interpolated."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ASSIGNMENT.fullmatch(stripped)
        if match is None:
            raise ComposeError(f"{path.name}:{number}: not KEY=VALUE: {line!r}")
        key, raw = match.group(1), match.group(2).strip()
        lookup = {**env, **values}
        if raw.startswith("'"):
            if len(raw) < 2 or not raw.endswith("'"):
                raise ComposeError(f"{path.name}:{number}: unclosed single quote")
            values[key] = raw[1:-1]
        elif raw.startswith('"'):
            if len(raw) < 2 or not raw.endswith('"'):
                raise ComposeError(f"{path.name}:{number}: unclosed double quote")
            inner = re.sub(r"\\(.)", lambda m: _DOUBLE_QUOTED_ESCAPES.get(m[1], m[0]), raw[1:-1])
            values[key] = interpolate(inner, lookup)
        else:
            values[key] = interpolate(re.split(r"\s+#", raw, maxsplit=1)[0].rstrip(), lookup)
    return values


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def render(
    project: Path, shell: Mapping[str, str], *, file: str = "docker-compose.yml"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The project's compose file (docker-compose.yml, or `file` as `-f` names it) with
    variables replaced as `docker compose config` does, and the variables it used: `.env` in
    the project folder, the shell's winning. YAML merge keys (`<<: *anchor`) are merged."""
    dotenv = project / ".env"
    variables = {**(read_env_file(dotenv, shell) if dotenv.exists() else {}), **shell}
    loaded = yaml.safe_load((project / file).read_text())
    rendered: dict[str, Any] = _interpolate_tree(loaded, variables)
    return rendered, variables


def container_env(
    project: Path, service: str, shell: Mapping[str, str], *, file: str = "docker-compose.yml"
) -> dict[str, str]:
    """The environment a service's container starts with: its env_files in order, then its
    `environment`, which wins."""
    config, variables = render(project, shell, file=file)
    spec = config["services"][service]
    env: dict[str, str] = {}
    entries = spec.get("env_file") or []
    for entry in [entries] if isinstance(entries, str | dict) else entries:
        path, required = (
            (entry, True)
            if isinstance(entry, str)
            else (
                entry["path"],
                entry.get("required", True),
            )
        )
        if (project / path).exists():
            env.update(read_env_file(project / path, variables))
        elif required:
            raise ComposeError(f"env file {path} not found")
    environment = spec.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(
            item.split("=", 1) if "=" in item else (item, None) for item in environment
        )
    for key, value in environment.items():
        if value is None:  # `KEY` alone: from the variables, absent when they lack it
            if key in variables:
                env[key] = variables[key]
        else:
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
