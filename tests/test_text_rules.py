"""What text a request may carry, through the HTTP API: refused with a 422 naming the field on
the single and the batch endpoint alike, never a 500 and never a mail that breaks later."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.api.api_keys import parse_api_key
from app.settings import Settings
from tests.conftest import WELCOME
from tests.smtp_server import SmtpServer
from tests.test_api import stored_count
from tests.test_delivery import accept, reaches

CONTEXT = WELCOME["context"]
INLINE = {
    "filename": "logo.png",
    "content_type": "image/png",
    "content": "aGVsbG8=",
    "inline": True,
}


def raw(request: dict[str, Any], literal: str) -> str:
    """`request` as JSON with the string "LITERAL" replaced by `literal`, a piece of JSON that
    Python's json module cannot write itself (a lone surrogate escape, 1e999)."""
    return json.dumps(request).replace('"LITERAL"', literal)


async def refused_everywhere(
    client: httpx.AsyncClient, body: str, field: str
) -> list[dict[str, Any]]:
    """Posted alone: 422 naming `field`. In a batch after a valid item: the valid one is
    accepted, this one refused by index naming `field`."""
    json_headers = {"content-type": "application/json"}
    response = await client.post("/v1/notifications", content=body, headers=json_headers)
    assert response.status_code == 422, response.text
    errors: list[dict[str, Any]] = response.json()["detail"]
    assert any(error["loc"][:2] == ["body", field] for error in errors), errors

    batch = f'{{"notifications": [{json.dumps(WELCOME)}, {body}]}}'
    response = await client.post("/v1/notifications/batch", content=batch, headers=json_headers)
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert items[0]["status"] == "queued"
    assert items[1]["error"] and items[1]["error"][0]["loc"][0] == field, items[1]
    return errors


TRAILING_NEWLINE: list[tuple[str, dict[str, Any], str]] = [
    ("header name", {"headers": {"X-A\n": "Bcc: x@evil.example"}}, "headers"),
    ("content_id", {"attachments": [{**INLINE, "content_id": "logo\n"}]}, "attachments"),
    ("content_type", {"attachments": [{**INLINE, "content_type": "image/png\n"}]}, "attachments"),
    ("tag", {"tags": ["onboarding\n"]}, "tags"),
    ("template", {"template": "welcome\n"}, "template"),
]


@pytest.mark.parametrize(
    ("change", "field"), [c[1:] for c in TRAILING_NEWLINE], ids=[c[0] for c in TRAILING_NEWLINE]
)
async def test_a_trailing_newline_never_passes_a_pattern(
    client: httpx.AsyncClient, settings: Settings, change: dict[str, Any], field: str
) -> None:
    await refused_everywhere(client, json.dumps({**WELCOME, **change}), field)
    assert stored_count(settings) == 1  # only the batch's valid item


def test_a_trailing_newline_never_passes_a_pattern_in_settings() -> None:
    with pytest.raises(ValueError, match="key name"):
        parse_api_key("ops\n:a-long-enough-secret")
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_api_key("ops:sha256:" + "a" * 64 + "\n")


async def test_header_names_differing_only_in_case_are_one_header(
    client: httpx.AsyncClient,
) -> None:
    request = {**WELCOME, "headers": {"X-Campaign": "a", "X-CAMPAIGN": "b"}}
    errors = await refused_everywhere(client, json.dumps(request), "headers")
    assert "X-Campaign and X-CAMPAIGN" in errors[0]["msg"]


# Each ends a line somewhere: in the header itself, or in the reader's display
SEPARATORS = {
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "NEXT LINE": "\x85",
    "C1 CSI": "\x9b",
    "DELETE": "\x7f",
    "TAB": "\t",
}
ONE_LINE_FIELDS: dict[str, tuple[str, Any]] = {
    "subject": ("subject", lambda text: {"subject": f"Hi{text}there"}),
    "display name": ("to", lambda text: {"to": [{"email": "a@example.com", "name": f"A{text}B"}]}),
    "named address": ("to", lambda text: {"to": [f"A{text}B <a@example.com>"]}),
    "header value": ("headers", lambda text: {"headers": {"X-Tag": f"a{text}b"}}),
    "reply_to name": ("reply_to", lambda text: {"reply_to": f"A{text}B <desk@example.com>"}),
}


@pytest.mark.parametrize("where", ONE_LINE_FIELDS)
@pytest.mark.parametrize("char", SEPARATORS.values(), ids=SEPARATORS.keys())
async def test_line_separators_and_all_control_characters_are_refused_in_header_text(
    client: httpx.AsyncClient, where: str, char: str
) -> None:
    field, change = ONE_LINE_FIELDS[where]
    errors = await refused_everywhere(client, json.dumps({**WELCOME, **change(char)}), field)
    assert f"U+{ord(char):04X}" in errors[0]["msg"], errors


async def test_format_characters_are_text_and_arrive_as_sent(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    developer = "👩\u200d💻 Ada \u200eLovelace"  # a ZWJ emoji sequence and a direction mark
    request = {
        **WELCOME,
        "to": [{"email": "ada@example.com", "name": developer}],
        "subject": developer,
        "headers": {"X-Team": developer},
    }
    await reaches(client, await accept(client, request), "sent")
    message = smtp.messages[0].message
    assert message["Subject"] == developer and message["X-Team"] == developer
    assert message["To"].addresses[0].display_name == developer


LONE_SURROGATE: list[tuple[str, dict[str, Any], str]] = [
    ("context value", {"context": {**CONTEXT, "name": "LITERAL"}}, "context"),
    ("nested context", {"context": {**CONTEXT, "user": {"tags": ["ok", "LITERAL"]}}}, "context"),
    ("subject", {"subject": "LITERAL"}, "subject"),
    ("header value", {"headers": {"X-Tag": "LITERAL"}}, "headers"),
    ("display name", {"to": [{"email": "a@example.com", "name": "LITERAL"}]}, "to"),
    ("tag", {"tags": ["LITERAL"]}, "tags"),
    ("metadata value", {"metadata": {"k": "LITERAL"}}, "metadata"),
    ("file name", {"attachments": [{**INLINE, "filename": "LITERAL"}]}, "attachments"),
]


@pytest.mark.parametrize(
    ("change", "field"), [c[1:] for c in LONE_SURROGATE], ids=[c[0] for c in LONE_SURROGATE]
)
async def test_a_lone_surrogate_is_422_naming_the_field_never_500(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = raw({**WELCOME, **change}, '"x\\ud800y"')
    errors = await refused_everywhere(client, body, field)
    # ours names the surrogate; pydantic's own check on length-limited strings comes first
    assert "surrogate" in errors[0]["msg"] or errors[0]["type"] == "string_unicode", errors


async def test_a_lone_surrogate_in_a_context_key_is_refused(client: httpx.AsyncClient) -> None:
    body = json.dumps({**WELCOME, "context": {**CONTEXT, "KEY": 1}}).replace('"KEY"', '"\\udfff"')
    await refused_everywhere(client, body, "context")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_a_number_that_is_not_finite_is_422_naming_context(
    client: httpx.AsyncClient, settings: Settings, number: str
) -> None:
    body = raw({**WELCOME, "context": {**CONTEXT, "user": {"score": ["LITERAL"]}}}, number)
    errors = await refused_everywhere(client, body, "context")
    assert errors[0]["loc"] == ["body", "context", "user", "score", 0], errors
    assert "finite" in errors[0]["msg"]
    assert stored_count(settings) == 1  # only the batch's valid item


async def test_a_body_nested_deeper_than_the_parser_takes_is_422_never_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    # Python's JSON reader takes ~900 levels; checking them recursively overflowed (500). The
    # body reader refuses nesting beyond pydantic's limit for the whole request, batch or not.
    deep = "[" * 900 + "]" * 900
    item = raw({**WELCOME, "context": {**CONTEXT, "deep": "LITERAL"}}, deep)
    batch = f'{{"notifications": [{json.dumps(WELCOME)}, {item}]}}'
    for path, body in [("/v1/notifications", item), ("/v1/notifications/batch", batch)]:
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert stored_count(settings) == 0
