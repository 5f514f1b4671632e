"""The lock files hold what pyproject.toml asks for, every pin with its hashes, and the dev lock
pins the runtime's packages exactly as the image gets them (scripts/lock writes both)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.image import normalise
from tests.live import ROOT

RUNTIME = ROOT / "requirements" / "runtime.txt"
DEV = ROOT / "requirements" / "dev.txt"
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIX = "run scripts/lock and commit requirements/"


def pins(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """Name (normalised) to (version, hashes) of each pin in a lock file."""
    found = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", block)
        if match:
            hashes = frozenset(re.findall(r"--hash=(sha256:[0-9a-f]{64})", block))
            found[normalise(match[1])] = (match[2], hashes)
    return found


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PROJECT["project"]["dependencies"]]


def dev_requirements() -> list[Requirement]:
    return [
        Requirement(r)
        for r in PROJECT["project"]["optional-dependencies"]["dev"]
        + PROJECT["build-system"]["requires"]
    ]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        (RUNTIME, runtime_requirements()),
        (DEV, runtime_requirements() + dev_requirements()),
    ],
    ids=["runtime", "dev"],
)
def test_each_dependency_is_locked_within_its_range(
    lock: Path, requirements: list[Requirement]
) -> None:
    locked = pins(lock)
    for requirement in requirements:
        name = normalise(requirement.name)
        assert name in locked, f"{requirement} is not in {lock.name}: {FIX}"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, outside {requirement}: {FIX}"
        )


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=["runtime", "dev"])
def test_every_pin_has_its_hashes(lock: Path) -> None:
    locked = pins(lock)
    assert locked
    assert [name for name, (_, hashes) in locked.items() if not hashes] == []


def test_the_dev_lock_pins_the_runtime_packages_exactly() -> None:
    dev = pins(DEV)
    for name, pin in pins(RUNTIME).items():
        assert dev.get(name) == pin, f"{name}: dev lock differs from runtime lock: {FIX}"


def closure(requirements: list[Requirement]) -> set[str]:
    """Every package these requirements pull in on this machine (extras included), read from
    the installed packages' metadata: scripts/test installed them from the dev lock."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        key = (normalise(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        extras = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed: {FIX}, then scripts/test")
        for line in requires:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate(e) for e in extras):
                todo.append(needed)
    return {name for name, _ in seen}


def test_the_runtime_lock_holds_everything_the_service_pulls_in() -> None:
    missing = closure(runtime_requirements()) - set(pins(RUNTIME))
    assert missing == set(), f"not in {RUNTIME.name}: {sorted(missing)}: {FIX}"


def test_the_dev_lock_holds_everything_the_tests_pull_in() -> None:
    missing = closure(runtime_requirements() + dev_requirements()) - set(pins(DEV))
    assert missing == set(), f"not in {DEV.name}: {sorted(missing)}: {FIX}"
