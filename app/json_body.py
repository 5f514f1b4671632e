"""Request bodies read as JSON, one way for every route that takes one.

A body must be UTF-8 JSON whose strings are Unicode text and whose numbers are finite: JSON can
spell a lone surrogate (`"\\ud800"`) or, in some parsers, `NaN`, `Infinity` and `1e999`, and none
of them can be written into a mail or stored as JSON again. Each such value is refused with a 422
that names where it is, so that a batch can refuse one item and accept the others.

pydantic's JSON parser (jiter) is fast but refuses a lone surrogate for the whole body, without
saying where, and reads `NaN` as a float. So a body that could hold such a value (a cheap scan of
its bytes says so) is first read by the standard library's parser, which keeps them, and searched;
every body that passes is then validated by pydantic from its bytes, as the fast path does.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Any, NamedTuple, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from app.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

# jiter refuses JSON nested deeper than this; the standard library parser goes further, so the
# careful path refuses it too (tests/test_json_body.py checks that both agree at the edge).
MAX_DEPTH = 201

# Only a \uD800-\uDFFF escape spells a lone surrogate (raw surrogates are not UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Digits as 0, E as e, + dropped: a number beyond a float shows as e000 or a run of 200 zeros.
_NUMBERS = bytes.maketrans(b"123456789E", b"000000000e")


def may_hold_unsendable(body: bytes) -> bool:
    """False if `body` cannot hold a lone surrogate or a number beyond a float (that needs
    NaN, Infinity, an exponent of three digits or a run of 200 digits); a false alarm only
    costs the careful path. Byte searches rather than one regular expression: ~1 µs on a
    typical body where the expression took ~5 µs, of an accept path of ~300 µs."""
    if b"NaN" in body or b"Infinity" in body:
        return True
    if b"\\u" in body and _SURROGATE_ESCAPE.search(body):
        return True
    numbers = body.translate(_NUMBERS, b"+")
    return b"000" in numbers and (b"e000" in numbers or b"0" * 200 in numbers)


Error = dict[str, Any]


class Parsed(NamedTuple):
    value: Any
    problems: list[Error]  # locations relative to the body


async def json_bytes(request: Request) -> bytes:
    """The body, refused like FastAPI refuses it when it is not declared JSON or is empty."""
    content_type = request.headers.get("content-type", "")
    subtype = content_type.partition(";")[0].strip().lower().rpartition("/")[2]
    if subtype != "json" and not subtype.endswith("+json"):
        raise InvalidRequest(
            ("body",), "send the body as JSON, with 'Content-Type: application/json'", "model_type"
        )
    body = await request.body()
    if not body:
        raise InvalidRequest(("body",), "Field required", "missing")
    return body


async def json_body(request: Request, model: type[M]) -> M:
    """The body as `model`; 422 naming each field that is wrong, with `loc` from 'body'."""
    model_value, _ = parse_body(await json_bytes(request), model)
    return model_value


def parse_body(
    body: bytes, model: type[M], *, items: str | None = None
) -> tuple[M, dict[int, list[Error]]]:
    """The body as `model`. A value no mail can carry inside element i of the list field `items`
    is returned as that element's errors (relative to it) instead of refusing the whole body."""
    parsed = _search(body) if may_hold_unsendable(body) else None
    if parsed is None or not parsed.problems:
        return validate(model, body), {}
    per_item: dict[int, list[Error]] = {}
    elsewhere: list[Error] = []
    for problem in parsed.problems:
        loc = problem["loc"]
        if items is not None and len(loc) >= 2 and loc[0] == items and isinstance(loc[1], int):
            per_item.setdefault(loc[1], []).append({**problem, "loc": loc[2:]})
        else:
            elsewhere.append(problem)
    if elsewhere:
        raise _refusal(elsewhere)
    return validate(model, parsed.value), per_item


def validate(model: type[M], data: bytes | Any) -> M:
    """`model` from JSON bytes (or from values already parsed), refused with `loc` from 'body'."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise _refusal(list(errors)) from None


def problems(value: Any) -> list[Error]:
    """Every string or key that is not Unicode text and every number that is not finite in a
    parsed JSON value, by location; or one error for the whole value if it nests deeper than
    MAX_DEPTH. Iterative: a deep value must not exhaust the interpreter's stack."""
    found: list[Error] = []
    todo: deque[tuple[Any, tuple[str | int, ...]]] = deque([(value, ())])
    while todo:
        item, loc = todo.popleft()
        if isinstance(item, dict | list) and len(loc) >= MAX_DEPTH:
            return [
                {
                    "loc": (),
                    "msg": f"Invalid JSON: nested deeper than {MAX_DEPTH} levels",
                    "type": "json_invalid",
                }
            ]
        if isinstance(item, dict):
            for key, child in item.items():
                if not _is_text(key):
                    found.append(_not_text((*loc, shown(key)), "the key"))
                todo.append((child, (*loc, shown(key))))
        elif isinstance(item, list):
            todo.extend((child, (*loc, index)) for index, child in enumerate(item))
        elif isinstance(item, str):
            if not _is_text(item):
                found.append(_not_text(loc, "the text"))
        elif isinstance(item, float) and not math.isfinite(item):
            found.append(
                {
                    "loc": loc,
                    "msg": f"Input should be a finite number, not {item}",
                    "type": "finite_number",
                }
            )
    return found


def shown(text: str) -> str:
    """`text` as it can be written back in an answer: a lone surrogate spelled as its escape."""
    return text if _is_text(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _search(body: bytes) -> Parsed | None:
    """The body as the standard library reads it, and what in it no mail can carry; None when
    that parser refuses it (pydantic's then says why, as for any malformed body)."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    return Parsed(value, problems(value))


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_text(loc: tuple[str | int, ...], what: str) -> Error:
    return {
        "loc": loc,
        "msg": f"{what} holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text;"
        " send UTF-8, or escape a character beyond U+FFFF as a surrogate pair",
        "type": "string_unicode",
    }


def _refusal(errors: list[Error] | list[ErrorDetails]) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors])
