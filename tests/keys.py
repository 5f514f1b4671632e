"""Keys files for tests: write one (atomically, as an operator's deployment would replace it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def table(name: str, key: str, **limits: Any) -> str:
    lines = ["[[keys]]", f'name = "{name}"', f'key = "{key}"']
    for field, value in limits.items():
        if isinstance(value, list):
            items = ", ".join(f'"{item}"' for item in value)
            lines.append(f"{field} = [{items}]")
        else:
            lines.append(f'{field} = "{value}"')
    return "\n".join(lines) + "\n"


def write_keys(path: Path, *tables: str) -> Path:
    """Replace the file whole: written beside it, then renamed over it."""
    partial = path.with_suffix(".partial")
    partial.write_text("\n".join(tables))
    os.replace(partial, path)
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
