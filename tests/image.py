"""What `docker build` would leave in the image, worked out for real without Docker.

The Dockerfile's steps run outside a container, in a scratch folder that stands for the image's
root: FROM gives a fresh virtual environment of this Python (nothing installed, so only what the
steps install is there), ENV sets variables, WORKDIR makes the folder, COPY copies from the
project less what .dockerignore leaves out of the build context, and RUN runs its shell command
in the working folder with the environment's `python` and `pip` first on PATH. RUN steps after
the dependency layer (adding a user) would change this machine, so they are skipped; anything
else the builder does not know fails rather than being guessed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

from tests.live import ROOT

METADATA_ONLY = {"USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "CMD", "LABEL", "ARG"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regex over paths."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def ignored(relative: str) -> bool:
    """Whether .dockerignore leaves this project path out of the build context: the last
    matching pattern decides, and a pattern that matches a folder takes its contents."""
    result = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = _pattern(line.removeprefix("!").strip("/"))
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


@dataclass
class Image:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    skipped: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    @property
    def bin(self) -> Path:
        return self.root / "python" / "bin"

    def path(self, image_path: str) -> Path:
        if image_path.startswith("/"):
            return self.root / image_path.lstrip("/")
        assert self.workdir is not None, f"relative path {image_path} before WORKDIR"
        return self.workdir / image_path

    def distributions(self) -> dict[str, str]:
        """Name (normalised) to version of everything installed in the image's Python."""
        listing = subprocess.run(
            [
                str(self.bin / "python"),
                "-c",
                "import importlib.metadata as m, json;"
                "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=self.root,  # not the project's folder, whose *.egg-info would count
        )
        found: dict[str, str] = json.loads(listing.stdout)
        return {normalise(name): version for name, version in found.items()}

    def build_output(self) -> list[str]:
        """Folders a build of our own would leave: build/, dist/, *.egg-info, anywhere."""
        return sorted(
            str(path.relative_to(self.root))
            for path in self.root.rglob("*")
            if path.is_dir() and (path.name in {"build", "dist"} or path.suffix == ".egg-info")
        )


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build(root: Path, *, run_until: str = "COPY app") -> Image:
    """Build the image into `root`; RUN steps from the first step that starts with
    `run_until` on are skipped (and listed in `skipped`)."""
    image = Image(root)
    root.mkdir(parents=True)
    running = True
    for instruction, arguments in dockerfile():
        step = f"{instruction} {arguments}"
        running = running and not step.startswith(run_until)
        if instruction == "FROM":
            venv.EnvBuilder(with_pip=False).create(root / "python")
            # the image's pip: this project's pip, installing into the image's Python
            pip = image.bin / "pip"
            python = image.bin / "python"
            pip.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip --python "{python}" "$@"\n')
            pip.chmod(0o755)
        elif instruction == "ENV":
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                image.env[name] = value
        elif instruction == "WORKDIR":
            image.workdir = image.path(arguments)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            *sources, destination = shlex.split(arguments)
            assert not any(s.startswith("--") for s in sources), f"flags not understood: {step}"
            for source in sources:
                _copy(source, image.path(destination), into=destination.endswith("/"))
        elif instruction == "RUN" and running:
            assert image.workdir is not None
            env = {
                **os.environ,
                **image.env,
                "PATH": f"{image.bin}{os.pathsep}{os.environ['PATH']}",
            }
            subprocess.run(["sh", "-c", arguments], cwd=image.workdir, env=env, check=True)
        elif instruction == "RUN":
            image.skipped.append(step)
        elif instruction == "CMD":
            image.command = json.loads(arguments)
        else:
            assert instruction in METADATA_ONLY, f"not understood: {step}"
    return image


def _copy(source: str, destination: Path, *, into: bool) -> None:
    origin = ROOT / source
    assert origin.exists(), f"COPY {source}: not in the project"
    assert not ignored(source), f"COPY {source}: .dockerignore leaves it out of the context"
    target = destination / origin.name if into else destination
    if origin.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, target)
        return
    for path in origin.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not ignored(relative):
            copied = target / path.relative_to(origin)
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copied)
