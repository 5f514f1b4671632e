"""The HTTP contract: what is accepted, what is refused (and then neither stored nor sent)."""

from __future__ import annotations

import base64
import json
import math
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.conftest import BOTH_BACKENDS, WELCOME, make_settings, wait_for
from tests.smtp_server import SmtpServer


def stored_count(settings: Settings) -> int:
    with sqlite3.connect(settings.database_path) as db:
        count: int = db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    return count


@BOTH_BACKENDS
async def test_accepts_with_202_location_and_queued_status(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    response = await client.post("/v1/notifications", json=WELCOME)

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "created_at", "suppressed"}
    assert body["suppressed"] == []
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/v1/notifications/{body['id']}"


@BOTH_BACKENDS
async def test_stored_notification_shows_its_outcome(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    request = {**WELCOME, "tags": ["onboarding"], "metadata": {"user_id": "42"}}
    location = (await client.post("/v1/notifications", json=request)).headers["location"]

    async def sent() -> bool:
        return bool((await client.get(location)).json()["status"] == "sent")

    await wait_for(sent)
    shown = (await client.get(location)).json()
    assert shown["template"] == "welcome"
    assert shown["subject"] == "Welcome aboard, Ada!"
    assert shown["recipients"]["to"] == [{"email": "ada@example.com", "name": None}]
    assert shown["from"] == {"email": "noreply@example.com", "name": "Notifier"}
    assert shown["message_id"] == smtp.messages[0].message["Message-ID"]
    assert [a["outcome"] for a in shown["attempts"]] == ["sent"]
    assert shown["sent_at"] is not None and shown["last_error"] is None
    assert shown["tags"] == ["onboarding"] and shown["metadata"] == {"user_id": "42"}


async def test_unknown_notification_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/notifications/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]


REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown template", {"template": "nope"}, "template", "no template named 'nope'"),
    ("template path", {"template": "../etc/passwd"}, "template", "pattern"),
    ("missing variable", {"context": {"name": "Ada"}}, "context", "action_url"),
    ("bad address", {"to": ["not-an-address"]}, "to", "not a valid email address"),
    ("bad named address", {"to": ["Ada <ada@@example.com>"]}, "to", "not a valid email"),
    ("no recipient", {"to": []}, "to", "at least 1"),
    ("sender not allowed", {"from": "boss@elsewhere.org"}, "from", "ALLOWED_SENDERS"),
    ("CRLF in subject", {"subject": "Hi\r\nBcc: x@evil.org"}, "subject", "CR, LF"),
    ("LF in name", {"to": [{"email": "a@example.com", "name": "A\nBcc: x"}]}, "to", "CR, LF"),
    ("CRLF in header", {"headers": {"X-Tag": "a\r\nBcc: x@evil.org"}}, "headers", "CR, LF"),
    ("non X- header", {"headers": {"Bcc": "x@evil.org"}}, "headers", "must start with X-"),
    ("unknown field", {"priority": "high"}, "priority", "Extra inputs"),
    ("send_at as seconds", {"send_at": 0}, "send_at", "RFC 3339"),
    ("send_at as a fraction", {"send_at": 1.5}, "send_at", "RFC 3339"),
    ("send_at read as milliseconds", {"send_at": 20_000_000_000}, "send_at", "RFC 3339"),
    ("send_at as a string of digits", {"send_at": "1700000000"}, "send_at", "RFC 3339"),
    ("long metadata key", {"metadata": {"k" * 1_048_576: "v"}}, "metadata", "1 to 64"),
    ("empty metadata key", {"metadata": {"": "v"}}, "metadata", "1 to 64"),
    ("metadata key with a line break", {"metadata": {"a\nb": "v"}}, "metadata", "1 to 64"),
    ("long metadata value", {"metadata": {"k": "v" * 501}}, "metadata", "500 characters"),
    ("long subject", {"subject": "s" * 501}, "subject", "at most 500 characters"),
    ("long tag", {"tags": ["t" * 65]}, "tags", "at most 64 characters"),
    ("51 metadata pairs", {"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata", "50"),
    (
        "too many recipients",
        {"to": [f"user{i}@example.com" for i in range(51)]},
        "to",
        "at most 50",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_unsendable_request_is_422_naming_the_field_and_nothing_is_stored_or_sent(
    client: httpx.AsyncClient,
    smtp: SmtpServer,
    settings: Settings,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    response = await client.post("/v1/notifications", json={**WELCOME, **change})

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(field in error["loc"] and message in error["msg"] for error in errors), errors
    assert stored_count(settings) == 0
    assert smtp.messages == []


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "foo/json",
        "text/json",
        "application/jsonx",
        "application/json; charset=utf-16",
        'application/json; charset="latin-1"',
    ],
)
async def test_a_body_that_is_not_json_is_422(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/notifications", content=b"template=welcome", headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert "application/json" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json;charset="UTF-8"',
        "application/vnd.notifier+json",
    ],
)
async def test_json_is_read_whichever_way_its_utf8_type_is_spelt(
    client: httpx.AsyncClient, content_type: str
) -> None:
    body = json.dumps(WELCOME).encode()
    response = await client.post(
        "/v1/notifications", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 202, response.text


async def test_malformed_json_is_422_not_500(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/v1/notifications", content=b'{"template": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert stored_count(settings) == 0


async def test_body_that_is_not_utf8_is_422_too(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/notifications", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_allowed_sender_domain_and_reply_to_are_accepted(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    request = {**WELCOME, "from": "Support <help@example.com>", "reply_to": "desk@example.com"}
    assert (await client.post("/v1/notifications", json=request)).status_code == 202
    await wait_for(lambda: len(smtp.messages) == 1)
    message = smtp.messages[0].message
    assert message["From"] == "Support <help@example.com>"
    assert message["Reply-To"] == "desk@example.com"
    assert smtp.messages[0].mail_from == "help@example.com"


@pytest.fixture
async def keyed_client(tmp_path: Path, smtp: SmtpServer) -> Any:
    application: FastAPI = create_app(
        make_settings(tmp_path, smtp.port, api_keys="k-one-secret, k-two-secret")
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic k-one-secret", "Bearer k-one-secre"])
async def test_missing_or_wrong_key_is_401(
    keyed_client: httpx.AsyncClient, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    response = await keyed_client.post("/v1/notifications", json=WELCOME, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


async def test_any_configured_key_is_accepted(keyed_client: httpx.AsyncClient) -> None:
    for auth in ("Bearer k-one-secret", "bearer k-two-secret", "Bearer  k-one-secret "):
        response = await keyed_client.post(
            "/v1/notifications", json=WELCOME, headers={"Authorization": auth}
        )
        assert response.status_code == 202


async def test_the_key_is_checked_before_the_body_is_read(keyed_client: httpx.AsyncClient) -> None:
    response = await keyed_client.post(
        "/v1/notifications", content=b'{"template": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


async def test_templates_are_listed_with_their_variables(client: httpx.AsyncClient) -> None:
    templates = {t["name"]: t for t in (await client.get("/v1/templates")).json()}
    assert templates["welcome"]["variables"] == ["action_url", "name"]
    assert templates["password_reset"]["variables"] == ["expires_in_minutes", "name", "reset_url"]
    assert templates["welcome"]["description"]


async def test_preview_renders_without_sending(client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    response = await client.post(
        "/v1/templates/password_reset/preview",
        json={
            "context": {"name": "<Ada>", "reset_url": "https://x.test/r", "expires_in_minutes": 30}
        },
    )
    assert response.status_code == 200
    preview = response.json()
    assert preview["subject"] == "Reset your password"
    assert "&lt;Ada&gt;" in preview["html"] and "<Ada>" not in preview["html"]
    assert "Hi <Ada>," in preview["text"]
    assert "30 minutes" in preview["text"]
    assert smtp.messages == []


async def test_preview_of_unknown_template_is_404_and_missing_variable_422(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/v1/templates/nope/preview", json={})).status_code == 404
    response = await client.post("/v1/templates/welcome/preview", json={"context": {}})
    assert response.status_code == 422
    assert "action_url" in response.json()["detail"][0]["msg"]


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    async def ready() -> bool:  # once the worker's first probe has answered
        return bool((await client.get("/readyz")).json()["status"] == "ready")

    await wait_for(ready)
    ready_body = (await client.get("/readyz")).json()
    assert ready_body["checks"] == {"database": "ok", "smtp": "ok", "delivery": "ok"}
    assert ready_body["smtp_last_contact"].endswith("Z")


async def test_readyz_stays_200_with_the_reason_when_smtp_is_down(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await smtp.stop()
    assert (await client.post("/v1/notifications", json=WELCOME)).status_code == 202

    async def smtp_down() -> bool:
        return "SMTP connection failed" in (await client.get("/readyz")).json()["checks"]["smtp"]

    await wait_for(smtp_down)
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
    assert ready.json()["checks"]["database"] == "ok"


async def test_openapi_has_an_example_for_every_request_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert model.get("examples"), f"{method.upper()} {path} has no example"


async def test_openapi_declares_every_refusal_a_route_can_answer(
    client: httpx.AsyncClient,
) -> None:
    # every /v1 route passes the admission layer (401, 429); a scope can be missing (403); a
    # body can be too big (413) or wrong (422); a route that touches the store can find it
    # busy (503)
    schema = (await client.get("/openapi.json")).json()
    missing = []
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            expected = {"401", "429"}
            if "requestBody" in operation:
                expected |= {"413", "422"}
            if path.startswith("/v1/notifications"):
                expected.add("503")
            if path != "/v1/templates":  # every route but the list of templates needs a scope
                expected.add("403")
            if absent := expected - set(operation["responses"]):
                missing.append(f"{method.upper()} {path}: {sorted(absent)}")
            if not operation.get("security"):
                missing.append(f"{method.upper()} {path}: no security scheme")
    assert missing == []


async def test_405_allows_every_method_the_path_serves(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    templates = {
        re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"): set(operations)
        for path, operations in schema["paths"].items()
    }
    for path in schema["paths"]:
        url = re.sub(r"\{[^}]+\}", "x", path)
        served = set().union(*(methods for regex, methods in templates.items() if regex.match(url)))
        served |= {"head"} if "get" in served else set()
        for method in {"get", "head", "post", "put", "delete", "options"} - served:
            response = await client.request(method.upper(), url)
            assert response.status_code == 405, (method, url)
            allowed = set(response.headers["allow"].lower().split(", "))
            assert allowed == served, (method, url)
    options = await client.options("/v1/notifications")
    assert options.headers["allow"] == "GET, HEAD, POST"


async def test_head_answers_every_get_route_like_get_without_a_body(
    client: httpx.AsyncClient,
) -> None:
    location = (await client.post("/v1/notifications", json=WELCOME)).headers["location"]
    paths = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/v1/templates"]
    paths += ["/v1/notifications", location, "/v1/notifications/nope"]
    for path in paths:
        get, head = await client.get(path), await client.head(path)
        assert head.status_code == get.status_code != 405, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path in ("/healthz", "/openapi.json", "/v1/templates", "/v1/notifications/nope"):
            assert head.headers["content-length"] == str(len(get.content)), path
    head = await client.head("/v1/templates/welcome/preview")  # POST only
    assert (head.status_code, head.headers["allow"]) == (405, "POST")


@pytest.fixture
def card_templates(tmp_path: Path) -> Path:
    """Templates whose rendering depends on the context's types, not only on its keys."""
    folder = tmp_path / "templates"
    (folder / "card").mkdir(parents=True)
    (folder / "card" / "subject.txt").write_text("For {{ user.name }}")
    (folder / "card" / "body.html").write_text("<p>{{ user.name }} has {{ count + 1 }}</p>")
    return folder


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"user": "Ada", "count": 1}, "has no attribute 'name'"),
        ({"user": {"name": "Ada"}, "count": "one"}, "can only concatenate str"),
    ],
    ids=["attribute of a string", "sum of a string and a number"],
)
async def test_preview_a_context_the_template_cannot_render_is_422_with_its_message(
    tmp_path: Path,
    smtp: SmtpServer,
    card_templates: Path,
    context: dict[str, Any],
    message: str,
) -> None:
    application = create_app(make_settings(tmp_path, smtp.port, templates_dir=card_templates))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/v1/templates/card/preview", json={"context": context})
            assert response.status_code == 422, response.text
            error = response.json()["detail"][0]
            assert error["loc"] == ["body", "context"]
            assert "card" in error["msg"] and message in error["msg"]
            good = {"user": {"name": "Ada"}, "count": 1}
            response = await http.post("/v1/templates/card/preview", json={"context": good})
            assert response.json()["subject"] == "For Ada"


def raw_json(document: Any, poison: str) -> bytes:
    """`document` as JSON, with the string "POISON" replaced by a raw JSON literal."""
    return json.dumps(document).replace('"POISON"', poison).encode()


POISONS = {
    "lone high surrogate": ('"\\ud800"', "string_unicode"),
    "lone low surrogate in text": ('"Ada \\udfff"', "string_unicode"),
    "NaN": ("NaN", "finite_number"),
    "-Infinity": ("-Infinity", "finite_number"),
    "1e999": ("1e999", "finite_number"),
}
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("poison", "kind"), POISONS.values(), ids=POISONS.keys())
async def test_every_body_refuses_what_no_mail_can_carry_naming_the_field(
    client: httpx.AsyncClient, settings: Settings, poison: str, kind: str
) -> None:
    context = {**WELCOME["context"], "name": "POISON"}
    cases: list[tuple[str, Any, list[Any]]] = [
        ("/v1/notifications", {**WELCOME, "context": context}, ["body", "context", "name"]),
        ("/v1/templates/welcome/preview", {"context": context}, ["body", "context", "name"]),
        ("/v1/notifications", {**WELCOME, "metadata": {"k": "POISON"}}, ["body", "metadata", "k"]),
        ("/v1/notifications", {**WELCOME, "to": ["POISON"]}, ["body", "to", 0]),
    ]
    for path, document, loc in cases:
        response = await client.post(path, content=raw_json(document, poison), headers=JSON)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"] == [{"loc": loc, "msg": ANY_TEXT, "type": kind}], (
            response.text
        )
    assert stored_count(settings) == 0


async def test_a_key_that_is_not_unicode_text_is_refused_and_shown_escaped(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"template": "welcome", "to": ["a@example.com"], "headers": {"X-\\udc00": "v"}}'
    response = await client.post("/v1/notifications", content=body, headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "headers", "X-\\udc00"]


@pytest.mark.parametrize(("poison", "kind"), POISONS.values(), ids=POISONS.keys())
async def test_a_batch_refuses_the_item_by_index_and_accepts_the_others(
    client: httpx.AsyncClient, settings: Settings, poison: str, kind: str
) -> None:
    bad = {**WELCOME, "context": {**WELCOME["context"], "name": "POISON"}}
    body = raw_json(
        {"notifications": [WELCOME, bad, {**WELCOME, "headers": {"X-A": "POISON"}}]}, poison
    )
    response = await client.post("/v1/notifications/batch", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["accepted"], result["refused"]) == (1, 2)
    first, second, third = result["items"]
    assert first["status"] == "queued"
    assert [(e["loc"], e["type"]) for e in second["error"]] == [(["context", "name"], kind)]
    headers_error = [(["headers", "X-A"], kind)] if kind == "string_unicode" else None
    if headers_error:  # a non-finite header value is refused by the model as not a string
        assert [(e["loc"], e["type"]) for e in third["error"]] == headers_error
    assert stored_count(settings) == 1
    assert (await client.get(f"/v1/notifications/{first['id']}")).status_code == 200


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT: Any = _AnyText()

HUGE = 200_000
BIG_ERRORS: list[tuple[str, Any]] = [
    ("/v1/notifications", {**WELCOME, "to": ["x" * HUGE]}),
    ("/v1/notifications", {**WELCOME, "headers": {"X-" + "a" * HUGE: "v"}}),
    ("/v1/notifications", {**WELCOME, "headers": {"X-A": "a\n" * HUGE}}),
    ("/v1/notifications", {**WELCOME, "to": ["not-an-address"] * 2_000}),
    ("/v1/notifications", {**WELCOME, "context": "x" * HUGE}),
    ("/v1/notifications", {**WELCOME, "subject": "s" * HUGE}),
    ("/v1/notifications", {**WELCOME, "x" * HUGE: 1}),
    ("/v1/notifications/batch", {"notifications": "x" * HUGE}),
    ("/v1/notifications/batch", {"notifications": [{**WELCOME, "to": ["x" * HUGE]}] * 3}),
    ("/v1/notifications", {**WELCOME, "context": {"n": [math.nan] * 50_000}}),
    ("/v1/notifications/batch", {"notifications": [{"n": [math.inf] * 50_000}] * 2}),
    ("/v1/templates/welcome/preview", {"context": ["x" * HUGE]}),
    ("/v1/templates/welcome/preview", {"context": {}, "y" * HUGE: 1}),
]


@pytest.mark.parametrize(("path", "document"), BIG_ERRORS)
async def test_a_4xx_names_the_problem_without_echoing_a_large_input(
    client: httpx.AsyncClient, path: str, document: Any
) -> None:
    response = await client.post(path, content=json.dumps(document).encode(), headers=JSON)
    assert response.status_code == 422
    assert len(response.content) < 8_000, response.content[:500]
    assert all(error["msg"] for error in response.json()["detail"])


async def test_a_batch_with_no_valid_item_lists_at_most_20_errors_like_any_422(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    bad = {"template": "welcome", "to": ["not-an-address"] * 5, "tags": [""] * 5}
    response = await client.post("/v1/notifications/batch", json={"notifications": [bad] * 500})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == 21, len(detail)
    assert detail[-1]["type"] == "too_many_errors"
    assert all(error["loc"][:2] == ["body", "notifications"] for error in detail[:-1])
    assert len(response.content) < 8_000
    assert stored_count(settings) == 0


@pytest.mark.parametrize("decoded", ["nan|x", "1.5|", "x|y", "1.5"])
async def test_a_cursor_we_never_wrote_is_422(client: httpx.AsyncClient, decoded: str) -> None:
    cursor = base64.urlsafe_b64encode(decoded.encode()).decode()
    response = await client.get("/v1/notifications", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_other_4xx_are_bounded_too(client: httpx.AsyncClient) -> None:
    long = 50_000  # httpx's longest URL is 64 KiB
    responses = [
        await client.get(f"/v1/notifications/{'n' * long}"),
        await client.get("/v1/notifications", params={"created_after": "t" * long}),
        await client.get("/v1/notifications", params={"cursor": "c" * long}),
    ]
    assert [r.status_code for r in responses] == [404, 422, 422]
    assert all(len(r.content) < 2_000 for r in responses), [len(r.content) for r in responses]


async def test_openapi_documents_each_recipients_outcome(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    view = schemas["NotificationView"]["properties"]
    assert "delivered" in view["recipients_status"]["description"]
    assert schemas["RecipientOutcome"]["enum"] == [
        "delivered",
        "refused",
        "pending",
        "failed",
        "cancelled",
        "suppressed",
    ]
    assert set(schemas["RecipientStatus"]["properties"]) == {
        "email",
        "status",
        "code",
        "message",
        "reason",
    }


async def test_a_batch_item_no_parser_can_read_alike_is_refused_alone(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    good = json.dumps(WELCOME)
    twice = good.replace('"template"', '"subject": "x\\ud800", "subject": "ok", "template"', 1)
    long_number = good.replace('"name": "Ada"', f'"name": {"1" * 4301}', 1)
    body = f'{{"notifications": [{good}, {twice}, {long_number}]}}'.encode()
    response = await client.post("/v1/notifications/batch", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert items[0]["status"] == "queued"
    assert [(e["loc"], e["type"]) for e in items[1]["error"]] == [(["subject"], "string_unicode")]
    assert [(e["loc"], e["type"]) for e in items[2]["error"]] == [
        (["context", "name"], "int_too_long")
    ]
    assert stored_count(settings) == 1
