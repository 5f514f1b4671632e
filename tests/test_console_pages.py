"""The activity page and a notification's page without a browser: filters and paging over the
store's search, escaping of stored text, friendly 404s, scopes and CSRF on the actions, and the
message as sent. The real-browser walk is tests/test_console_activity.py."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from app.api.callers import ANONYMOUS, Caller, Scope
from app.console.display import age
from app.console.filters import FIELDS, FilterProblem, read_listing
from app.console.mail_parts import mail_parts
from app.console.notification import MAIL_CSP
from app.store.sqlite import SqliteStore
from tests.conftest import WELCOME, wait_for
from tests.console import console, csrf_in, sign_in
from tests.factories import new
from tests.keys import bearer, table, write_keys
from tests.smtp_server import SmtpServer
from tests.test_accepting import rfc3339

SHOP = "shop-secret-key-000001"
CLERK = "clerk-secret-key-00001"  # send and read, not cancel
VIEWER = "viewer-secret-key-0001"  # read and cancel, not send
WEB = "web-secret-key-0000001"
OPS = "ops-admin-key-00000001"
REFUSED = "550 5.1.1 no such user"
LATER = rfc3339(86400)
RESET = {
    "template": "password_reset",
    "to": ["ada@example.com"],
    "context": {"name": "Ada", "reset_url": "https://example.com/r", "expires_in_minutes": 30},
}
_ROW = re.compile(r'<tr data-id="([^"]+)"')


def keys(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.toml",
        table("shop", SHOP),
        table("clerk", CLERK, scopes=["send", "read"]),
        table("viewer", VIEWER, scopes=["read", "cancel"]),
        table("web", WEB),
        table("ops", OPS, scopes=["admin"]),
    )


async def send(client: httpx.AsyncClient, key: str, request: dict[str, Any]) -> str:
    response = await client.post("/v1/notifications", json=request, headers=bearer(key))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def status_of(client: httpx.AsyncClient, notification_id: str) -> str:
    shown = await client.get(f"/v1/notifications/{notification_id}", headers=bearer(OPS))
    return str(shown.json()["status"])


async def reaches(client: httpx.AsyncClient, notification_id: str, status: str) -> None:
    async def check() -> bool:
        return await status_of(client, notification_id) == status

    await wait_for(check)


def rows(html: str) -> list[str]:
    return _ROW.findall(html)


async def test_activity_shows_the_callers_own_newest_first_and_filters_them(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        first = await send(client, SHOP, WELCOME)
        promo = {**WELCOME, "to": ["bob@example.com"], "cc": ["carol@example.com"]}
        tagged = await send(client, SHOP, {**promo, "tags": ["promo"]})
        reset = await send(client, SHOP, RESET)
        theirs = await send(client, WEB, WELCOME)
        for each in (first, tagged, reset, theirs):
            await reaches(client, each, "sent")
        await sign_in(client, SHOP)

        async def listed(**params: str) -> list[str]:
            page = await client.get("/console", params=params)
            assert page.status_code == 200, page.text
            fragment = await client.get("/console/rows", params=params)
            assert rows(fragment.text) == rows(page.text)
            assert "<html" not in fragment.text
            return rows(page.text)

        assert await listed() == [reset, tagged, first]
        assert await listed(template="password_reset") == [reset]
        assert await listed(tag="promo") == [tagged]
        assert await listed(recipient="Carol@example.com") == [tagged]
        assert await listed(recipient="ada@example.com", template="welcome") == [first]
        assert await listed(status="sent", tag="promo") == [tagged]
        assert await listed(status="failed") == []
        assert await listed(**{"from": "2000-01-01T00:00", "to": "2999-01-01T00:00"}) == [
            reset,
            tagged,
            first,
        ]
        assert await listed(to="2000-01-01T00:00") == []
        page = (await client.get("/console")).text
        assert 'bob@example.com <span class="notice">+1</span>' in page
        assert 'id="f-caller"' not in page  # the caller filter is for admin keys


async def test_activity_pages_with_the_apis_cursor(tmp_path: Path, smtp: SmtpServer) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        sent = [await send(client, SHOP, WELCOME) for _ in range(5)]
        await sign_in(client, SHOP)
        seen: list[str] = []
        url = "/console?limit=2&tag="
        while True:
            page = (await client.get(url)).text
            seen += rows(page)
            older = re.search(r'href="(/console\?[^"]+)" id="older"', page)
            if older is None:
                break
            url = older.group(1).replace("&amp;", "&")
            assert 'id="newest"' in (await client.get(url)).text
        assert seen == sent[::-1]


async def test_an_admin_sees_everyone_and_may_narrow_to_one_caller(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        shops = await send(client, SHOP, WELCOME)
        webs = await send(client, WEB, WELCOME)
        await sign_in(client, SHOP)
        refused = await client.get("/console", params={"caller": "web"})
        assert refused.status_code == 403 and "caller: filtering by caller needs" in refused.text
        await sign_in(client, OPS)
        assert rows((await client.get("/console")).text) == [webs, shops]
        assert rows((await client.get("/console", params={"caller": "web"})).text) == [webs]
        assert (await client.get(f"/console/notifications/{shops}")).status_code == 200


async def test_filters_that_cannot_apply_are_400_naming_the_field(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        await sign_in(client, SHOP)
        for field, value in [
            ("recipient", "ada"),
            ("recipient", "@example.com"),
            ("status", "lost"),
            ("from", "yesterday"),
            ("to", "2026-13-01T00:00"),
            ("cursor", "garbage"),
            ("limit", "0"),
            ("limit", "²"),
            ("tag", "t" * 65),
        ]:
            page = await client.get("/console", params={field: value})
            assert page.status_code == 400, (field, value)
            assert f'id="problem">{field}: ' in page.text, (field, page.text)
            assert (await client.get("/console/rows", params={field: value})).status_code == 400


texts = st.text(max_size=50)


@given(
    values=st.dictionaries(st.sampled_from([*FIELDS, "cursor", "limit"]), texts),
    admin=st.booleans(),
)
def test_any_query_is_a_listing_or_a_problem_naming_a_field(
    values: dict[str, str], admin: bool
) -> None:
    caller = ANONYMOUS if admin else Caller("shop", frozenset({Scope.READ}))
    try:
        listing = read_listing(QueryParams(values), caller=caller)
    except FilterProblem as problem:
        assert problem.name in (*FIELDS, "cursor", "limit") and problem.status in (400, 403)
    else:
        assert listing.owner == (values.get("caller", "").strip() or None if admin else "shop")


@given(st.floats(allow_nan=True))
def test_any_age_reads_as_words(seconds: float) -> None:
    assert re.fullmatch(r"\d+ (s|min|h|d)|just now|long ago", age(seconds))


async def test_stored_text_is_escaped_everywhere(tmp_path: Path, smtp: SmtpServer) -> None:
    hostile = "<script>alert(1)</script>"
    request = {
        **WELCOME,
        "to": [{"email": "eve@example.com", "name": "Eve <b>x</b>"}],
        "subject": f"Hi {hostile}",
        "metadata": {"note": f"<img src=x onerror=alert(1)>{hostile}"},
        "headers": {"X-Note": f"{hostile}"},
    }
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        notification = await send(client, SHOP, request)
        await reaches(client, notification, "sent")
        await sign_in(client, SHOP)
        for url in ("/console", f"/console/notifications/{notification}"):
            page = (await client.get(url)).text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, url
            assert hostile not in page and "<img src=x" not in page and "<b>x</b>" not in page
        unknown = await client.get(f"/console/notifications/{hostile}")
        assert unknown.status_code == 404 and hostile not in unknown.text


async def test_unknown_and_other_callers_notifications_are_a_friendly_404(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        theirs = await send(client, WEB, WELCOME)
        await reaches(client, theirs, "sent")
        await sign_in(client, SHOP)
        token = csrf_in((await client.get("/console")).text)
        for notification in (theirs, "no-such-id"):
            base = f"/console/notifications/{notification}"
            for path in ("", "/html", "/message", "/progress"):
                answer = await client.get(base + path)
                assert answer.status_code == 404, path
                assert "No such notification" in answer.text
            for action in ("cancel", "retry"):
                answer = await client.post(f"{base}/{action}", data={"csrf": token})
                assert answer.status_code == 404, action
        assert await status_of(client, theirs) == "sent"


async def test_cancel_and_retry_act_as_the_api_does(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.refuse["bob@example.com"] = REFUSED
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        later = await send(client, SHOP, {**WELCOME, "send_at": LATER})
        failed = await send(client, SHOP, {**WELCOME, "to": ["bob@example.com"]})
        await reaches(client, failed, "failed")
        await sign_in(client, SHOP)
        page = (await client.get(f"/console/notifications/{failed}")).text
        assert 'id="retry"' in page and 'id="cancel"' not in page
        assert "550" in page and "5.1.1 no such user" in page
        token = csrf_in(page)

        refused = await client.post(f"/console/notifications/{later}/cancel", data={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        too_early = await client.post(f"/console/notifications/{later}/retry", data={"csrf": token})
        assert too_early.status_code == 409 and "only failed notifications" in too_early.text

        done = await client.post(f"/console/notifications/{later}/cancel", data={"csrf": token})
        assert done.status_code == 303
        assert done.headers["location"] == f"/console/notifications/{later}?done=cancelled"
        assert await status_of(client, later) == "cancelled"
        assert "Cancelled." in (await client.get(done.headers["location"])).text

        smtp.behaviour.refuse.clear()
        done = await client.post(f"/console/notifications/{failed}/retry", data={"csrf": token})
        assert done.status_code == 303
        await reaches(client, failed, "sent")
        assert [m.rcpt_tos for m in smtp.messages] == [["bob@example.com"]]


async def test_a_key_without_the_actions_scope_sees_no_button_and_may_not_act(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = REFUSED
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        later = await send(client, CLERK, {**WELCOME, "send_at": LATER})
        # a key that cannot send has mail only if it once could: stored here as it was then
        store = SqliteStore(tmp_path / "notifications.db")
        failed = new(caller="viewer", to=["bob@example.com"])
        await store.create(failed)
        await store.close()
        await reaches(client, failed.id, "failed")  # the worker polls the store
        for key, notification, action, scope in (
            (CLERK, later, "cancel", "cancel"),
            (VIEWER, failed.id, "retry", "send"),
        ):
            await sign_in(client, key)
            page = (await client.get(f"/console/notifications/{notification}")).text
            assert 'id="retry"' not in page and 'id="cancel"' not in page
            answer = await client.post(
                f"/console/notifications/{notification}/{action}", data={"csrf": csrf_in(page)}
            )
            assert answer.status_code == 403, answer.text
            assert f"lacks the &#39;{scope}&#39; scope" in answer.text
        assert await status_of(client, failed.id) == "failed"
        assert await status_of(client, later) == "scheduled"


async def test_the_page_shows_the_message_as_sent_and_downloads_it(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with console(tmp_path, smtp, api_keys_file=keys(tmp_path)) as client:
        notification = await send(client, SHOP, {**WELCOME, "tags": ["onboarding"]})
        await reaches(client, notification, "sent")
        await sign_in(client, SHOP)
        base = f"/console/notifications/{notification}"
        page = (await client.get(base)).text
        (received,) = smtp.messages
        assert received.message_id.replace("<", "&lt;").replace(">", "&gt;") in page
        assert '<iframe class="mail" sandbox src=' in page and "allow-scripts" not in page
        assert "Welcome, Ada!" in page  # the text part
        assert '<span class="tag">onboarding</span>' in page
        html = await client.get(f"{base}/html")
        assert html.headers["content-security-policy"] == MAIL_CSP
        assert "Welcome, Ada!" in html.text
        download = await client.get(f"{base}/message")
        assert download.content == received.data
        assert download.headers["content-type"] == "message/rfc822"
        assert f'filename="{notification}.eml"' in download.headers["content-disposition"]
        assert message_from_bytes(download.content, policy=policy.default)["Subject"]


@given(
    st.binary(max_size=400)
    | st.builds(
        "Content-Type: {}\r\nContent-Transfer-Encoding: {}\r\n\r\n{}".format,
        st.sampled_from(
            [
                "text/html; charset=x-unknown",
                "text/plain; charset=utf-8",
                "multipart/alternative; boundary=b",
                "text/html",
            ]
        ),
        st.sampled_from(["base64", "quoted-printable", "8bit", "x-bogus"]),
        st.text(max_size=200),
    ).map(lambda text: text.encode("utf-8", "surrogatepass"))
)
def test_any_bytes_read_as_parts_without_failing(data: bytes) -> None:
    parts = mail_parts(data)
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in parts.headers)
