"""GET /v1/templates/{name}/lint: each warning tripped by a test template, none for the shipped
templates; the 102 KB limit at its edge and any HTML read without a 500."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from app.rendering.lint import GMAIL_CLIP_BYTES, lint_html
from tests.conftest import ROOT
from tests.smtp_server import SmtpServer
from tests.test_delivery import service

LINT_TEMPLATES = Path(__file__).resolve().parent / "lint_templates"


async def test_the_test_template_trips_every_warning(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp, templates_dir=LINT_TEMPLATES) as client:
        response = await client.get("/v1/templates/trips_all/lint")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["template"] == "trips_all" and body["sample"] is True
    codes = [w["code"] for w in body["warnings"]]
    assert sorted(codes) == [
        "empty_link",
        "html_too_big",
        "http_link",
        "img_without_alt",
        "no_text_part",
    ]
    assert all(w["message"] for w in body["warnings"])


async def test_the_shipped_templates_have_samples_and_no_warnings(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp) as client:
        names = [t["name"] for t in (await client.get("/v1/templates")).json()]
        assert names
        for name in names:
            assert (ROOT / "templates" / name / "sample.json").is_file()
            body = (await client.get(f"/v1/templates/{name}/lint")).json()
            assert body == {"template": name, "warnings": [], "sample": True}


async def test_without_a_sample_it_renders_placeholders_and_names_the_variables(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    folder = tmp_path / "templates" / "plain"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi {{ name }}")
    (folder / "body.html").write_text("<p>Hi {{ name }}, see {{ url }}</p>")
    (folder / "body.txt").write_text("Hi {{ name }}")
    async with service(tmp_path, smtp, templates_dir=tmp_path / "templates") as client:
        body = (await client.get("/v1/templates/plain/lint")).json()
        missing = await client.get("/v1/templates/nope/lint")
    assert body["sample"] is False
    assert [w["code"] for w in body["warnings"]] == ["no_sample"]
    assert "name, url" in body["warnings"][0]["message"]
    assert missing.status_code == 404


async def test_a_sample_that_is_no_json_object_is_a_warning_and_not_used(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    folder = tmp_path / "templates" / "plain"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi {{ name }}")
    (folder / "body.html").write_text("<p>Hi {{ name }}</p>")
    (folder / "body.txt").write_text("Hi {{ name }}")
    (folder / "sample.json").write_text('["Ada"]')
    async with service(tmp_path, smtp, templates_dir=tmp_path / "templates") as client:
        body = (await client.get("/v1/templates/plain/lint")).json()
    assert body["sample"] is False
    assert [w["code"] for w in body["warnings"]] == ["bad_sample", "no_sample"]


async def test_lint_needs_the_preview_scope(tmp_path: Path, smtp: SmtpServer) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "reader"\nkey = "reader-secret-123"\nscopes = ["read"]\n')
    async with service(tmp_path, smtp, api_keys_file=keys) as client:
        response = await client.get(
            "/v1/templates/welcome/lint", headers={"Authorization": "Bearer reader-secret-123"}
        )
    assert response.status_code == 403 and "'preview'" in response.json()["detail"]


@given(st.integers(min_value=-64, max_value=64), st.sampled_from(["x", "é", "€"]))
def test_html_is_too_big_exactly_past_the_limit(offset: int, char: str) -> None:
    size = GMAIL_CLIP_BYTES + offset
    width = len(char.encode())
    html = char * (size // width) + "y" * (size % width)
    assert len(html.encode()) == size
    too_big = "html_too_big" in [w.code for w in lint_html(html)]
    assert too_big == (size > GMAIL_CLIP_BYTES)


@given(st.text())
def test_any_html_is_read_without_error(html: str) -> None:
    for warning in lint_html(html):
        assert warning.code and warning.message


@given(
    st.lists(
        st.sampled_from(
            [
                "<a href='http://x'>",
                "</a>",
                "<img>",
                "<img alt=''>",
                "t",
                "<a>",
                "<!--",
                "<p",
                "&amp",
                "<script>",
            ]
        )
    )
)
def test_any_tag_soup_is_read_without_error(parts: list[str]) -> None:
    lint_html("".join(parts))
