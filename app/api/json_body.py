"""Request bodies read as JSON, one way for every route that takes one.

A body must be UTF-8 JSON whose strings are Unicode text and whose numbers are finite: JSON can
spell a lone surrogate (`"\\ud800"`) or, in some parsers, `NaN`, `Infinity` and `1e999`, and none
of them can be written into a mail or stored as JSON again. Each such value is refused with a 422
that names where it is, so that a batch can refuse one item and accept the others.

pydantic's JSON parser (jiter) is fast but refuses a lone surrogate or an integer of more than
4300 digits for the whole body, without saying where, and reads `NaN` as a float. So a body that
could hold such a value (a cheap scan of its bytes says so) is first read by the standard
library's parser, which keeps them, and searched; a body where nothing is found is then validated
by pydantic from its bytes, as the fast path does. A key given twice means its last value, in
both parsers; the earlier values are searched too, so that one jiter would choke on is refused
where it is rather than for the whole body.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import deque
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from app.api.http_errors import ITEM_ERRORS, MAX_ERRORS
from app.errors import InvalidRequest
from app.text_rules import SCANNED

M = TypeVar("M", bound=BaseModel)

# jiter refuses JSON nested deeper than this; the standard library parser goes further, so the
# careful path refuses it too (tests/test_json_body.py checks that both agree at the edge).
MAX_DEPTH = 201

# Only a \uD800-\uDFFF escape spells a lone surrogate (raw surrogates are not UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Digits as 0, E as e, + dropped: a number beyond a float shows as e000 or a run of 200 zeros.
_NUMBERS = bytes.maketrans(b"123456789E", b"000000000e")


def _may_hold_unsendable(body: bytes) -> bool:
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
_NOT_PARSED: Any = object()
_SCANNED = {SCANNED: True}
# One more than an answer lists (app.api.http_errors), so that it can say there are more.
_LISTED = MAX_ERRORS + 1
_LISTED_PER_ITEM = ITEM_ERRORS + 1
_NOT_TEXT = (
    "{what} holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text; send UTF-8,"
    " or escape a character beyond U+FFFF as a surrogate pair"
)


# application/json or a structured-syntax type (RFC 6839) such as application/merge-patch+json
_JSON_TYPE = re.compile(r"application/(?:json|[a-z0-9][a-z0-9!#$&^_.-]*\+json)")


def _json_content_type(header: str) -> str | None:
    """None if `header` declares JSON we read (UTF-8, RFC 8259), else what is wrong with it."""
    media_type, *parameters = (part.strip() for part in header.split(";"))
    if not _JSON_TYPE.fullmatch(media_type.lower()):
        return "send the body as JSON, with 'Content-Type: application/json'"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return (
                f"the body must be UTF-8 JSON; 'Content-Type: {header[:80]}' declares another"
                " charset: send UTF-8 with 'Content-Type: application/json'"
            )
    return None


async def json_bytes(request: Request) -> bytes:
    """The body, refused like FastAPI refuses it when it is not declared JSON or is empty."""
    if problem := _json_content_type(request.headers.get("content-type", "")):
        raise InvalidRequest(("body",), problem, "model_type")
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
    value = _careful_parse(body) if _may_hold_unsendable(body) else _NOT_PARSED
    if value is _NOT_PARSED:
        return _validate(model, body), {}
    listed = value.get(items) if items is not None and isinstance(value, dict) else None
    try:
        if isinstance(listed, list):
            rest = {key: child for key, child in value.items() if key != items}
            if type(value) is _Object:  # the body gave some key twice: search the values dropped
                rest = _object([*rest.items(), *value.dropped])
            elsewhere = _problems(rest, limit=_LISTED)
            per_item = {
                index: found
                for index, item in enumerate(listed)
                if (found := _problems(item, limit=_LISTED_PER_ITEM, depth=3))
            }
        else:
            elsewhere, per_item = _problems(value, limit=_LISTED), {}
    except _TooDeep as exc:
        raise _refusal([{"loc": (), "msg": str(exc), "type": "json_invalid"}]) from None
    if elsewhere:
        raise _refusal(elsewhere)
    if not per_item:  # a false alarm: read it like any other body
        return _validate(model, body), {}
    return _validate(model, value), per_item


def _validate(model: type[M], data: bytes | Any) -> M:
    """`model` from JSON bytes (or from values already parsed), refused with `loc` from 'body'."""
    try:
        if isinstance(data, bytes):  # searched whole already: found clean, or checked in full
            return model.model_validate_json(data, context=_SCANNED)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise _refusal(list(errors)) from None


class _Object(dict[str, Any]):
    """A JSON object that gave some key more than once: the dict holds the last values (as
    both parsers read it), `dropped` the earlier ones."""

    dropped: list[tuple[str, Any]]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    kept = _Object(found)
    kept.dropped = [(key, value) for key, value in pairs if found[key] is not value]
    return kept


class _LongInteger:
    """An integer with more digits than Python converts from text (and jiter reads)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _integer(text: str) -> int | _LongInteger:
    digits = len(text.lstrip("-"))
    if digits > sys.get_int_max_str_digits():
        return _LongInteger(digits)
    return int(text)


class _TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"Invalid JSON: nested deeper than {MAX_DEPTH} levels")


# (key, parent) links: a location is built only for what is reported, so that walking a
# large, deep body costs one small tuple per container, not a copy of its path.
_Path = tuple[str | int, "_Path"] | None


def _problems(value: Any, *, limit: int, depth: int = 1) -> list[Error]:
    """Every string or key that is not Unicode text and every number that is not finite in a
    parsed JSON value (whose outermost container is `depth` levels deep in the body), by
    location: the first `limit` of them. Raises _TooDeep past MAX_DEPTH. Iterative and in one
    pass over the values: a deep or large body must neither exhaust the stack nor take long."""
    found: list[Error] = []

    def report(path: _Path, msg: str, kind: str) -> None:
        if len(found) < limit:
            found.append({"loc": _loc(path), "msg": msg, "type": kind})

    todo: deque[tuple[Any, _Path, int]] = deque([([value], None, depth - 1)])
    while todo:
        container, path, level = todo.popleft()
        if level > MAX_DEPTH:
            raise _TooDeep()
        if type(container) is dict:
            pairs: Any = container.items()
        elif type(container) is _Object:
            pairs = [*container.items(), *container.dropped]
        elif level < depth:  # the list around the value, which is no part of the body
            pairs = [(None, container[0])]
        else:
            pairs = enumerate(container)
        for key, child in pairs:
            here = path if key is None else (key, path)
            if type(key) is str and not _is_text(key):
                report(here, _NOT_TEXT.format(what="the key"), "string_unicode")
            kind = type(child)
            if kind is str:
                if not _is_text(child):
                    report(here, _NOT_TEXT.format(what="the text"), "string_unicode")
            elif kind is float:
                if not math.isfinite(child):
                    report(here, f"Input should be a finite number, not {child}", "finite_number")
            elif kind is _LongInteger:
                report(
                    here,
                    f"an integer of {child.digits} digits; at most"
                    f" {sys.get_int_max_str_digits()} are allowed",
                    "int_too_long",
                )
            elif kind is dict or kind is list or kind is _Object:
                todo.append((child, here, level + 1))
    return found


def _loc(path: _Path) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    while path is not None:
        key, path = path
        parts.append(_shown(key) if isinstance(key, str) else key)
    return tuple(reversed(parts))


def _shown(text: str) -> str:
    """`text` as it can be written back in an answer: a lone surrogate spelled as its escape."""
    return text if _is_text(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _careful_parse(body: bytes) -> Any:
    """The body as the standard library reads it (lone surrogates and NaN kept), or
    _NOT_PARSED when that parser refuses it: pydantic's then says why, as for any body."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_object, parse_int=_integer)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return _NOT_PARSED


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refusal(errors: list[Error] | list[ErrorDetails]) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors])
