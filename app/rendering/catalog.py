"""Mail templates on disk: find them, say which variables they need, render subject, HTML and text.

Each template is a folder `TEMPLATES_DIR/<name>/` with `subject.txt`, `body.html`, optionally
`body.txt` (else a text part is derived from the HTML) and `description.txt`. Folders whose name
starts with `_` hold shared layouts and are not templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    meta,
    select_autoescape,
)

from app.errors import TemplateBroken, TemplateNotFound
from app.rendering.html_text import html_to_text

TEMPLATE_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME = re.compile(TEMPLATE_NAME)
# Characters that end a line somewhere (in a header, or in a reader's display), and other
# whitespace controls: each run of them becomes one space. The other control characters are
# dropped. Ordinary spaces (NBSP, ideographic) are kept.
_BREAKS = re.compile("[\t\n\v\f\r \x1c-\x1f\x85\u2028\u2029]+")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    description: str
    variables: tuple[str, ...]
    has_text: bool


@dataclass(frozen=True)
class _Parts:
    """A template's compiled files."""

    subject: Template
    html: Template
    text: Template | None = None


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    html: str
    text: str


def one_line(text: str) -> str:
    """A rendered subject as one header line: line breaks and runs of spaces become one space,
    other control characters go (the rule for header text is in app.text_rules)."""
    return _BREAKS.sub(" ", _CONTROL.sub("", text)).strip(" ")


class TemplateCatalog:
    """The templates found in one folder, checked once at start-up."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise TemplateBroken(f"TEMPLATES_DIR {str(directory)!r} is not a folder")
        self._env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            # compiled once; checking every file's mtime on each render cost ~7% of delivery
            auto_reload=False,
        )
        self._templates: dict[str, TemplateInfo] = {}
        self._parts: dict[str, _Parts] = {}
        for folder in sorted(directory.iterdir()):
            if folder.is_dir() and _NAME.fullmatch(folder.name):
                self._templates[folder.name], self._parts[folder.name] = self._load(folder)

    def _load(self, folder: Path) -> tuple[TemplateInfo, _Parts]:
        name = folder.name
        for required in ("subject.txt", "body.html"):
            if not (folder / required).is_file():
                raise TemplateBroken(f"template {name!r} has no {required}")
        has_text = (folder / "body.txt").is_file()
        parts = [f"{name}/subject.txt", f"{name}/body.html"]
        if has_text:
            parts.append(f"{name}/body.txt")
        try:
            variables = set().union(*(self._variables(part) for part in parts))
            compiled = _Parts(*(self._compile(part) for part in parts))
        except TemplateError as exc:
            raise TemplateBroken(f"template {name!r} does not compile: {exc}") from exc
        except _Unreadable as exc:
            raise TemplateBroken(f"template {name!r}: {exc}") from exc.__cause__
        description_file = folder / "description.txt"
        try:
            description = (
                description_file.read_text("utf-8").strip() if description_file.is_file() else ""
            )
        except (UnicodeDecodeError, OSError) as exc:
            raise TemplateBroken(
                f"template {name!r}: {_unreadable(f'{name}/description.txt', exc)}"
            ) from exc
        info = TemplateInfo(
            name=name,
            description=description,
            variables=tuple(sorted(variables)),
            has_text=has_text,
        )
        return info, compiled

    def _compile(self, template_name: str) -> Template:
        template = self._env.get_template(template_name)
        # Jinja chains the template's globals to the environment's and flattens the chain on
        # every render; ours never change after start-up, so flatten them once.
        template.globals = dict(template.globals)
        return template

    def _variables(self, template_name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """Variables a template (and every layout it extends or includes) reads from the context."""
        assert self._env.loader is not None
        try:
            source, _, _ = self._env.loader.get_source(self._env, template_name)
        except (UnicodeDecodeError, OSError) as exc:
            raise _Unreadable(_unreadable(template_name, exc)) from exc
        tree = self._env.parse(source)
        found = set(meta.find_undeclared_variables(tree))
        for parent in meta.find_referenced_templates(tree):
            if parent is not None and parent not in seen:
                found |= self._variables(parent, seen | {template_name})
        return found

    def all(self) -> list[TemplateInfo]:
        return list(self._templates.values())

    def get(self, name: str) -> TemplateInfo:
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateNotFound(name) from None

    def missing_variables(self, name: str, context: Mapping[str, Any]) -> list[str]:
        return [var for var in self.get(name).variables if var not in context]

    def render(
        self, name: str, context: Mapping[str, Any], *, subject: str | None = None
    ) -> RenderedMail:
        parts = self._parts.get(name)
        if parts is None:
            raise TemplateNotFound(name)
        try:
            # a caller's subject was checked to be one line and goes out exactly as given
            rendered_subject = (
                one_line(parts.subject.render(context)) if subject is None else subject
            )
            html = parts.html.render(context)
            text = parts.text.render(context) if parts.text else html_to_text(html)
        except TemplateError as exc:
            raise TemplateBroken(f"template {name!r} failed to render: {exc}") from exc
        return RenderedMail(subject=rendered_subject, html=_inline_css(html), text=text)


class _Unreadable(Exception):
    """A template file (or a layout it uses) that cannot be read as text."""


def _unreadable(file: str, exc: UnicodeDecodeError | OSError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"{file} in TEMPLATES_DIR is not UTF-8 text (byte {exc.object[exc.start]:#04x} at"
            f" offset {exc.start}): save it as UTF-8"
        )
    return f"{file} in TEMPLATES_DIR cannot be read: {exc.strerror or exc}"


def _inline_css(html: str) -> str:
    # Gmail and Outlook drop <style> blocks; inline the rules into style attributes.
    return css_inline.inline(html)
