"""Templates on disk: variables, escaping, layouts, derived text, broken templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import TemplateBroken, TemplateNotFound
from app.rendering.catalog import TemplateCatalog
from tests.conftest import ROOT


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text)


@pytest.fixture
def catalog() -> TemplateCatalog:
    return TemplateCatalog(ROOT / "templates")


def test_html_is_autoescaped_and_text_is_not(catalog: TemplateCatalog) -> None:
    context = {"name": "<script>alert(1)</script>", "action_url": "https://x.test/?a=1&b=2"}
    mail = catalog.render("welcome", context)
    assert "&lt;script&gt;" in mail.html and "<script>" not in mail.html
    assert "<script>alert(1)</script>" in mail.text
    assert "https://x.test/?a=1&amp;b=2" in mail.html


def test_context_values_are_data_not_templates(catalog: TemplateCatalog) -> None:
    mail = catalog.render("welcome", {"name": "{{ 7*7 }}", "action_url": "u"})
    assert "{{ 7*7 }}" in mail.text and "49" not in mail.text
    assert mail.subject == "Welcome aboard, {{ 7*7 }}!"


def test_subject_is_forced_onto_one_line(catalog: TemplateCatalog) -> None:
    mail = catalog.render("welcome", {"name": "Ada\r\nBcc: evil@x.org\x00", "action_url": "u"})
    assert mail.subject == "Welcome aboard, Ada Bcc: evil@x.org!"


def test_css_from_the_layout_is_inlined(catalog: TemplateCatalog) -> None:
    html = catalog.render("welcome", {"name": "Ada", "action_url": "u"}).html
    assert "<style>" not in html
    assert 'class="button"' in html and "background: #2563eb" in html


def test_variables_include_the_layouts(tmp_path: Path) -> None:
    write(tmp_path / "_layouts", base_html="<h1>{{ brand }}</h1>{% block body %}{% endblock %}")
    write(
        tmp_path / "note",
        subject_txt="{{ title }}",
        body_html='{% extends "_layouts/base.html" %}{% block body %}{{ text }}'
        "{% for item in items %}{{ item }}{% endfor %}{% endblock %}",
    )
    catalog = TemplateCatalog(tmp_path)
    assert catalog.get("note").variables == ("brand", "items", "text", "title")
    assert catalog.missing_variables("note", {"title": "t", "items": []}) == ["brand", "text"]


def test_text_part_is_derived_from_html_when_absent(tmp_path: Path) -> None:
    write(
        tmp_path / "note",
        subject_txt="Hi",
        body_html="<style>p{color:red}</style><h1>Hello {{ name }}</h1><p>Read"
        ' <a href="https://x.test/doc">the docs</a>.</p><ul><li>one</li><li>two</li></ul>',
    )
    text = TemplateCatalog(tmp_path).render("note", {"name": "Ada"}).text
    assert text == "Hello Ada\n\nRead the docs (https://x.test/doc).\n\n- one\n- two\n"


def test_unknown_template_is_not_found(catalog: TemplateCatalog) -> None:
    with pytest.raises(TemplateNotFound):
        catalog.get("nope")


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"body_html": "x"}, "has no subject.txt"),
        ({"subject_txt": "x"}, "has no body.html"),
        ({"subject_txt": "{% if %}", "body_html": "x"}, "does not compile"),
    ],
)
def test_a_broken_template_on_disk_is_named_at_start_up(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    write(tmp_path / "broken", **files)
    with pytest.raises(TemplateBroken, match=f"'broken' {problem}"):
        TemplateCatalog(tmp_path)


@pytest.mark.parametrize("file", ["subject.txt", "body.html", "body.txt", "description.txt"])
def test_a_template_file_that_is_not_utf8_is_named_at_start_up(tmp_path: Path, file: str) -> None:
    write(tmp_path / "latin", subject_txt="Hi", body_html="<p>Hi</p>")
    (tmp_path / "latin" / file).write_bytes("Grüße {{ name }}".encode("latin-1"))
    with pytest.raises(TemplateBroken, match=f"'latin'.*latin/{file}.*not UTF-8.*0xfc"):
        TemplateCatalog(tmp_path)


def test_a_layout_that_is_not_utf8_is_named_with_the_template_using_it(tmp_path: Path) -> None:
    write(tmp_path / "uses", subject_txt="Hi", body_html='{% extends "_base/layout.html" %}')
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "layout.html").write_bytes(b"\xff\xfe<p>")
    with pytest.raises(TemplateBroken, match=r"'uses'.*_base/layout\.html.*not UTF-8"):
        TemplateCatalog(tmp_path)


def test_missing_templates_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(TemplateBroken, match="TEMPLATES_DIR"):
        TemplateCatalog(tmp_path / "absent")
