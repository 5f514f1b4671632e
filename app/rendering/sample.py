"""A template rendered with its sample context, and the warnings a sender wants before sending it:
what `GET /v1/templates/{name}/lint` answers and what the console's gallery shows, from one place.

The sample is the template folder's `sample.json`; without one (or with one that is not a JSON
object) each variable is rendered as its own name, `[name]`, and a warning says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.rendering.catalog import RenderedMail, TemplateCatalog, TemplateInfo
from app.rendering.lint import LintWarning, lint_html

SAMPLE_FILE = "sample.json"


@dataclass(frozen=True)
class Sampled:
    """One template rendered with its sample."""

    template: TemplateInfo
    context: dict[str, Any]
    sample: bool  # the context is the folder's sample.json (else placeholders)
    rendered: RenderedMail | None  # None: the template failed on the context (see warnings)
    warnings: list[LintWarning]


def render_sample(catalog: TemplateCatalog, *, templates_dir: Path, name: str) -> Sampled:
    """Template `name` rendered with its sample, with every warning; never raises for what the
    folder holds (a bad sample or a failed render is a warning). Raises TemplateNotFound."""
    info = catalog.get(name)
    warnings: list[LintWarning] = []
    try:
        context = sample_context(templates_dir / name)
    except (ValueError, OSError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        warnings.append(LintWarning("bad_sample", f"{SAMPLE_FILE} cannot be read: {exc}"))
        context = None
    sample = context is not None
    if context is None:
        context = placeholders(info.variables)
        if info.variables:
            needed = ", ".join(info.variables)
            warnings.append(
                LintWarning("no_sample", f"no {SAMPLE_FILE}; rendered with [name] for: {needed}")
            )
    rendered: RenderedMail | None = None
    try:
        rendered = catalog.render(name, context)
    except Exception as exc:  # the sample does not suit the template: say so, never a 500
        warnings.append(LintWarning("render_failed", f"{type(exc).__name__}: {exc}"[:300]))
    else:
        warnings += lint_html(rendered.html, has_text_part=info.has_text)
    return Sampled(
        template=info, context=context, sample=sample, rendered=rendered, warnings=warnings
    )


def sample_context(folder: Path) -> dict[str, Any] | None:
    """The context in the template folder's sample.json; None if it has none. Raises
    ValueError when the file is not a JSON object."""
    path = folder / SAMPLE_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text("utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{SAMPLE_FILE} must hold a JSON object")
    # JSON can spell a lone surrogate ("\\ud800"), which no page or mail can carry: refused
    # here (UnicodeEncodeError is a ValueError) rather than when a page shows it
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def placeholders(variables: tuple[str, ...]) -> dict[str, str]:
    """Without a sample: each variable rendered as its own name, `[name]`."""
    return {name: f"[{name}]" for name in variables}
