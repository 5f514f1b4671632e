"""The console's templates gallery: every template the key may use, rendered with its sample at
two widths, with its warnings; the live editor's render route, held to the API preview's
limits and scopes; and the same in a real browser, where a template's script never runs."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from playwright.async_api import Dialog, Page, expect

from app.console.gallery import DESKTOP_PX, MOBILE_PX
from tests.browser import shoot
from tests.conftest import ROOT
from tests.console import console, sign_in
from tests.keys import bearer, table, write_keys
from tests.live import running, service_env
from tests.postgres import free_port
from tests.smtp_server import SmtpServer

EDITOR = "editor-secret-key-0001"  # read and preview
READER = "reader-secret-key-0001"  # read only
WELCOME_ONLY = "welcome-only-key-0001"  # read and preview, the welcome template only
THROTTLED = "throttled-key-000001"  # read and preview, two requests a minute

_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
SCRIPT_RAN = "the script ran"


def gallery_templates(tmp_path: Path) -> Path:
    """The shipped templates, the one that trips every lint rule, and three more: one whose
    HTML carries scripts, one without a sample, one that fails on a string where it adds."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    shutil.copytree(ROOT / "tests" / "lint_templates" / "trips_all", folder / "trips_all")
    scripted = folder / "scripted"
    scripted.mkdir()
    (scripted / "subject.txt").write_text("Scripted for {{ name }}")
    (scripted / "body.txt").write_text("Hi {{ name }}")
    (scripted / "body.html").write_text(
        '<p id="ran">no script ran</p><p>Hi {{ name }}</p>'
        f'<script>document.getElementById("ran").textContent = "{SCRIPT_RAN}";'
        ' alert("ran")</script>'
        f'<img src="data:," alt="x" onerror="document.body.textContent = \'{SCRIPT_RAN}\'">'
    )
    (scripted / "sample.json").write_text('{"name": "Ada"}')
    unsampled = folder / "unsampled"
    unsampled.mkdir()
    (unsampled / "subject.txt").write_text("Order {{ order_id }}")
    (unsampled / "body.html").write_text("<p>Order {{ order_id }} for {{ name }}</p>")
    (unsampled / "body.txt").write_text("Order {{ order_id }} for {{ name }}")
    adds = folder / "adds"
    adds.mkdir()
    (adds / "subject.txt").write_text("Count")
    (adds / "body.html").write_text("<p>{{ n + 1 }}</p>")
    (adds / "body.txt").write_text("{{ n + 1 }}")
    (adds / "sample.json").write_text('{"n": 41}')
    return folder


def keys(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.toml",
        table("editor", EDITOR, scopes=["read", "preview"]),
        table("support", READER, scopes=["read"]),
        table("welcomer", WELCOME_ONLY, scopes=["read", "preview"], templates=["welcome"]),
        table("throttled", THROTTLED, scopes=["read", "preview"], rate_limit="2/minute"),
    )


def csrf_meta(html: str) -> str:
    found = _META.search(html)
    assert found, "no csrf-token meta in the page"
    return found.group(1)


class Editor:
    """A signed-in console client and the CSRF token its pages carry, posting as gallery.js."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    async def render(self, name: str, body: Any, *, token: bool = True) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-CSRF-Token"] = self.token
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            f"/console/templates/{name}/render", content=content, headers=headers
        )


async def signed_in(client: httpx.AsyncClient, key: str) -> Editor:
    assert (await sign_in(client, key)).status_code == 303
    page = await client.get("/console/templates")
    assert page.status_code == 200, page.text
    return Editor(client, csrf_meta(page.text))


@pytest.fixture
async def editor(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[Editor]:
    async with console(
        tmp_path,
        smtp,
        api_keys_file=keys(tmp_path),
        templates_dir=gallery_templates(tmp_path),
        max_context_bytes=2048,
        max_context_depth=4,
    ) as client:
        yield await signed_in(client, EDITOR)


def detail_locs(response: httpx.Response) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["detail"]]


# --- the page ----------------------------------------------------------------------------------


async def test_the_gallery_shows_every_template_rendered_with_its_sample_and_warnings(
    editor: Editor,
) -> None:
    page = (await editor.client.get("/console/templates")).text
    for name in ("welcome", "password_reset", "trips_all", "scripted", "unsampled", "adds"):
        assert f'id="template-{name}"' in page
    assert page.count(f'width="{DESKTOP_PX}"') == page.count(f'width="{MOBILE_PX}"') == 6
    assert page.count('sandbox=""') == 12 and "allow-scripts" not in page
    # the sample's values, the subject and the text part; the HTML escaped into srcdoc
    assert "Welcome aboard, Ada!" in page and "Welcome, Ada!" in page
    assert 'srcdoc="&lt;!DOCTYPE html&gt;' in page
    for code in ("html_too_big", "img_without_alt", "http_link", "empty_link", "no_text_part"):
        assert f"<code>{code}</code>" in page
    # without a sample: the variables it needs, rendered as placeholders
    unsampled = page[page.index('id="template-unsampled"') :]
    assert "<code>name</code>, <code>order_id</code>" in unsampled
    assert "Order [order_id] for [name]" in unsampled and "no_sample" in unsampled
    assert 'data-render="/console/templates/welcome/render"' in page


async def test_the_gallery_shows_only_the_templates_the_key_may_use(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(
        tmp_path, smtp, api_keys_file=keys(tmp_path), templates_dir=gallery_templates(tmp_path)
    ) as client:
        welcomer = await signed_in(client, WELCOME_ONLY)
        page = (await client.get("/console/templates")).text
        assert 'id="template-welcome"' in page
        assert "password_reset" not in page and "trips_all" not in page
        refused = await welcomer.render("password_reset", {"context": {}})
        assert refused.status_code == 422
        assert detail_locs(refused) == [["path", "name"]]
        assert "may not use template 'password_reset'" in refused.text


async def test_a_read_key_sees_the_samples_and_an_editor_that_says_it_needs_preview(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        reader = await signed_in(client, READER)
        page = (await client.get("/console/templates")).text
        assert "Welcome aboard, Ada!" in page and "data-render" not in page
        assert "readonly" in page and "needs the <code>preview</code> scope" in page
        refused = await reader.render("welcome", {"context": {"name": "x", "action_url": "y"}})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "the key of 'support' lacks the scope 'preview'"


async def test_a_sample_that_is_no_json_object_is_a_warning_not_an_error(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    folder = gallery_templates(tmp_path)
    (folder / "welcome" / "sample.json").write_text('["not", "an object"]')
    (folder / "scripted" / "sample.json").write_text('{"name": "\\ud800"}')  # no Unicode text
    async with console(tmp_path, smtp, templates_dir=folder) as client:
        answer = await client.get("/console/templates")
    assert answer.status_code == 200
    assert answer.text.count("<code>bad_sample</code>") == 2
    assert "Welcome aboard, [name]!" in answer.text


# --- the editor's render route -----------------------------------------------------------------


async def test_the_editor_renders_as_the_api_preview_does_with_the_lint_warnings(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(
        tmp_path, smtp, api_keys_file=keys(tmp_path), templates_dir=gallery_templates(tmp_path)
    ) as client:
        editor = await signed_in(client, EDITOR)
        context = {"name": "Grace <3", "action_url": "https://example.com/g"}
        answer = await editor.render("welcome", {"context": context})
        api = await client.post(
            "/v1/templates/welcome/preview", json={"context": context}, headers=bearer(EDITOR)
        )
        lint = await client.get("/v1/templates/trips_all/lint", headers=bearer(EDITOR))
        tripped = await editor.render("trips_all", {"context": {"name": "Ada", "padding": 110}})
    assert answer.status_code == api.status_code == 200, answer.text
    body = answer.json()
    assert {k: body[k] for k in ("subject", "html", "text")} == api.json()
    assert body["subject"] == "Welcome aboard, Grace <3!" and "Grace &lt;3" in body["html"]
    assert body["warnings"] == []
    assert tripped.json()["warnings"] == lint.json()["warnings"]
    assert answer.headers["cache-control"] == "no-store"


async def test_render_errors_are_4xx_naming_the_problem(editor: Editor) -> None:
    missing = await editor.render("welcome", {"context": {"name": "Ada"}})
    assert missing.status_code == 422 and detail_locs(missing) == [["body", "context"]]
    assert "needs action_url" in missing.text
    not_json = await editor.render("welcome", b'{"context": {"name": }')
    assert not_json.status_code == 422 and "Invalid JSON" in not_json.text
    not_object = await editor.render("welcome", {"context": ["Ada"]})
    assert not_object.status_code == 422 and detail_locs(not_object) == [["body", "context"]]
    extra = await editor.render("welcome", {"context": {}, "html": "<p>"})
    assert extra.status_code == 422 and detail_locs(extra) == [["body", "html"]]
    surrogate = await editor.render("welcome", b'{"context": {"name": "\\ud800"}}')
    assert surrogate.status_code == 422
    assert detail_locs(surrogate) == [["body", "context", "name"]]
    fails = await editor.render("adds", {"context": {"n": "forty"}})
    assert fails.status_code == 422 and "failed to render" in fails.text
    unknown = await editor.render("nope", {"context": {}})
    assert unknown.status_code == 404 and "no template named 'nope'" in unknown.text
    bad_name = await editor.render("Bad.Name", {"context": {}})
    assert bad_name.status_code == 422 and detail_locs(bad_name) == [["path", "name"]]


async def test_the_context_limits_of_a_notification_apply(editor: Editor) -> None:
    url = "https://example.com/x"
    big = await editor.render("welcome", {"context": {"name": "x" * 3000, "action_url": url}})
    assert big.status_code == 422 and "MAX_CONTEXT_BYTES allows 2048" in big.text
    deep = {"name": "x", "action_url": url, "d": {"a": {"b": {"c": {"e": 1}}}}}
    too_deep = await editor.render("welcome", {"context": deep})
    assert too_deep.status_code == 422 and "MAX_CONTEXT_DEPTH allows 4" in too_deep.text


async def test_the_render_route_is_refused_without_the_csrf_token_or_a_session(
    editor: Editor,
) -> None:
    body = {"context": {"name": "Ada", "action_url": "https://example.com"}}
    without = await editor.render("welcome", body, token=False)
    assert without.status_code == 403 and "CSRF" in without.json()["detail"]
    forged = Editor(editor.client, editor.token + "x")
    assert (await forged.render("welcome", body)).status_code == 403
    assert (await editor.render("welcome", body)).status_code == 200
    editor.client.cookies.delete("notifier_session", path="/console")
    signed_out = await editor.render("welcome", body)
    assert signed_out.status_code == 401 and "sign in" in signed_out.json()["detail"]


async def test_each_render_charges_the_callers_rate_limit(tmp_path: Path, smtp: SmtpServer) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        throttled = await signed_in(client, THROTTLED)
        body = {"context": {"name": "Ada", "action_url": "https://example.com"}}
        statuses = [(await throttled.render("welcome", body)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]


text = st.text(
    st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(["\ud800", "<", "{"]))
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
contexts = st.dictionaries(
    st.sampled_from(["name", "action_url", "reset_url", "expires_in_minutes", "n"]) | text,
    json_values,
    max_size=6,
)
# trips_all repeats a paragraph `padding` times: a number the test keeps small, since a template
# that loops on a number from the context loops as long as it is told to (as when sending)
padded = st.fixed_dictionaries(
    {
        "name": json_values,
        "padding": st.one_of(st.integers(max_value=200), st.none(), st.floats(), text),
    }
)
bodies = st.builds(lambda context: {"context": context}, contexts | padded) | st.dictionaries(
    text, json_values, max_size=3
)


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["welcome", "password_reset", "trips_all", "scripted", "adds", "nope"]),
    body=bodies,
)
async def test_any_json_object_posted_to_render_is_answered_2xx_or_4xx_never_500(
    editor: Editor, name: str, body: dict[str, Any]
) -> None:
    answer = await editor.render(name, json.dumps(body).encode())  # NaN and escapes included
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
    shape = answer.json()
    if answer.status_code == 200:
        assert set(shape) == {"subject", "html", "text", "warnings"}
    else:
        assert shape["detail"]


# --- in a real browser -------------------------------------------------------------------------


async def open_gallery(page: Page, port: int) -> None:
    await page.goto(f"http://127.0.0.1:{port}/console/templates")
    await page.fill("#key", EDITOR)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"http://127.0.0.1:{port}/console/templates")


def live_env(tmp_path: Path, smtp: SmtpServer) -> dict[str, str]:
    return service_env(
        tmp_path,
        smtp.port,
        API_KEYS_FILE=str(keys(tmp_path)),
        TEMPLATES_DIR=str(gallery_templates(tmp_path)),
    )


async def shoot_previews(page: Page, folder: Path, name: str) -> Path:
    """`shoot`, with the viewport as tall as the page first: Chromium paints a sandboxed
    (cross-origin) iframe only once it is in the viewport, and a full-page screenshot alone
    would show the previews below the fold empty."""
    viewport = page.viewport_size
    assert viewport is not None
    height = await page.evaluate("document.documentElement.scrollHeight")
    await page.set_viewport_size({"width": viewport["width"], "height": height})
    # two frames: one to lay the previews out in the viewport, one to paint them
    await page.evaluate(
        "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )
    try:
        return await shoot(page, folder, name)
    finally:
        await page.set_viewport_size(viewport)


def uvicorn(port: int) -> list[str]:
    return ["uvicorn", "app.main:app", "--port", str(port)]


async def test_the_gallery_in_a_browser_shows_every_template_at_both_widths(
    tmp_path: Path, smtp: SmtpServer, page: Page, screenshots: Path
) -> None:
    port = free_port()
    env = live_env(tmp_path, smtp)
    async with running(uvicorn(port), env=env, port=port, log=tmp_path / "service.log"):
        await open_gallery(page, port)
        names = ["adds", "password_reset", "scripted", "trips_all", "unsampled", "welcome"]
        cards = page.locator("section.template")
        await expect(cards).to_have_count(len(names))
        assert [await card.get_attribute("data-template") for card in await cards.all()] == names
        for name in names:
            card = f"#template-{name}"
            for kind, width in (("desktop", DESKTOP_PX), ("mobile", MOBILE_PX)):
                box = await page.locator(f"{card} iframe.{kind}").bounding_box()
                assert box is not None and round(box["width"]) == width, (name, kind, box)
        for kind in ("desktop", "mobile"):
            frame = page.frame_locator(f"#template-welcome iframe.{kind}")
            await expect(frame.locator("h1")).to_have_text("Welcome, Ada!")
            await expect(frame.locator("a.button")).to_have_attribute(
                "href", "https://example.com/start"
            )
            reset = page.frame_locator(f"#template-password_reset iframe.{kind}")
            await expect(reset.locator("body")).to_contain_text("The link works for 30 minutes.")
        await expect(page.locator("#template-welcome [data-part=subject]")).to_have_text(
            "Welcome aboard, Ada!"
        )
        await expect(page.locator("#template-welcome [data-part=text]")).to_contain_text(
            "Get started: https://example.com/start"
        )
        warnings = page.locator("#template-trips_all [data-part=warnings] li code")
        await expect(warnings).to_have_text(
            ["html_too_big", "no_text_part", "img_without_alt", "http_link", "empty_link"]
        )
        await expect(page.locator("#template-welcome [data-part=warnings]")).to_have_text(
            "No warnings."
        )
        await expect(page.locator("#template-unsampled .variables")).to_contain_text(
            "name, order_id"
        )
        await shoot_previews(page, screenshots, "templates")
        await page.set_viewport_size({"width": 375, "height": 812})
        box = await page.locator("#template-welcome iframe.mobile").bounding_box()
        assert box is not None and round(box["width"]) == MOBILE_PX
        await shoot_previews(page, screenshots, "templates-375")


async def test_the_live_editor_re_renders_without_a_reload_and_shows_errors(
    tmp_path: Path, smtp: SmtpServer, page: Page, screenshots: Path
) -> None:
    port = free_port()
    env = live_env(tmp_path, smtp)
    async with running(uvicorn(port), env=env, port=port, log=tmp_path / "service.log"):
        await open_gallery(page, port)
        await page.evaluate("window.notReloaded = true")
        card = page.locator("#template-welcome")
        editor = card.locator("textarea")
        frame = page.frame_locator("#template-welcome iframe.desktop")
        mobile = page.frame_locator("#template-welcome iframe.mobile")
        error = card.locator("[data-part=error]")
        await editor.fill('{"name": "Grace", "action_url": "http://example.com/g"}')
        await expect(card.locator("[data-part=subject]")).to_have_text("Welcome aboard, Grace!")
        await expect(frame.locator("h1")).to_have_text("Welcome, Grace!")
        await expect(mobile.locator("h1")).to_have_text("Welcome, Grace!")
        await expect(card.locator("[data-part=text]")).to_contain_text("Welcome, Grace!")
        # the warnings follow the context: an http:// link now
        await expect(card.locator("[data-part=warnings] code")).to_have_text(["http_link"])
        await expect(error).to_be_hidden()

        await editor.fill('{"name": "Grace", ')
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("Invalid JSON")
        await expect(frame.locator("h1")).to_have_text("Welcome, Grace!")  # the last good one
        await shoot(page, screenshots, "templates-invalid-json")

        await editor.fill('{"name": "Grace"}')
        await expect(error).to_contain_text("422: context: template 'welcome' needs action_url")

        await editor.fill("[1, 2]")
        await expect(error).to_contain_text("must be a JSON object")

        await card.locator("[data-reset]").click()
        await expect(frame.locator("h1")).to_have_text("Welcome, Ada!")
        await expect(error).to_be_hidden()
        await expect(card.locator("[data-part=warnings]")).to_have_text("No warnings.")
        assert await page.evaluate("window.notReloaded") is True


async def test_a_templates_script_does_not_run_in_the_preview_and_csrf_guards_render(
    tmp_path: Path, smtp: SmtpServer, page: Page
) -> None:
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    port = free_port()
    env = live_env(tmp_path, smtp)
    async with running(uvicorn(port), env=env, port=port, log=tmp_path / "service.log"):
        await open_gallery(page, port)
        card = page.locator("#template-scripted")
        # two locks: the sandbox, and the page's CSP (no inline script), which srcdoc inherits
        for kind in ("desktop", "mobile"):
            frame = page.frame_locator(f"#template-scripted iframe.{kind}")
            await expect(frame.locator("#ran")).to_have_text("no script ran")
        # rendered again by the editor: still sandboxed
        await card.locator("textarea").fill('{"name": "Grace"}')
        frame = page.frame_locator("#template-scripted iframe.desktop")
        await expect(frame.locator("body")).to_contain_text("Hi Grace")
        await expect(frame.locator("#ran")).to_have_text("no script ran")
        assert dialogs == []
        for iframe in await page.locator("iframe").all():
            assert await iframe.get_attribute("sandbox") == ""

        # the page's own script with the cookie but without the header: refused
        statuses = await page.evaluate(
            """async () => {
                const post = (headers) => fetch("/console/templates/scripted/render", {
                    method: "POST", credentials: "same-origin",
                    headers: {"Content-Type": "application/json", ...headers},
                    body: JSON.stringify({context: {name: "Eve"}}),
                }).then((r) => r.status);
                const token = window.notifierConsole.csrfToken();
                return [await post({}), await post({"X-CSRF-Token": "forged"}),
                        await post({"X-CSRF-Token": token})];
            }"""
        )
        assert statuses == [403, 403, 200]
