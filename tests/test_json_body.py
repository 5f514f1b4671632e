"""Reading bodies: one outcome per JSON document, whichever path reads it, and every value no
mail can carry (lone surrogates, non-finite numbers) refused where it is."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.json_body import MAX_DEPTH, parse_body
from app.api.schemas import BatchRequest, PreviewRequest

# High surrogates anywhere, low ones only where no high one can precede them: JSON would read
# such a neighbour pair as one character, as it should.
text = st.text(
    st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(["\ud800", "\udbff"]))
) | st.sampled_from(["\udc00", "x\udfff"])
numbers = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, text),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


def outcome(body: bytes) -> tuple[str, Any]:
    """What reading `body` as a preview request gives: the context, or the refusals' places."""
    try:
        request, _ = parse_body(body, PreviewRequest)
    except RequestValidationError as exc:
        return "refused", sorted((tuple(map(str, e["loc"])), e["type"]) for e in exc.errors())
    return "read", request.context


def unsendable(value: Any, loc: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Where `value` holds a lone surrogate or a non-finite number (an oracle written apart)."""

    def is_text(s: str) -> bool:
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in s)

    if isinstance(value, dict):
        found = []
        for key, child in value.items():
            shown = key.encode("utf-8", "backslashreplace").decode()
            if not is_text(key):
                found.append((*loc, shown))
            found += unsendable(child, (*loc, shown))
        return found
    if isinstance(value, list):
        return [f for i, child in enumerate(value) for f in unsendable(child, (*loc, i))]
    if isinstance(value, str):
        return [] if is_text(value) else [loc]
    if isinstance(value, float) and not math.isfinite(value):
        return [loc]
    return []


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_each_unsendable_value_is_refused_where_it_is_and_nothing_else(value: Any) -> None:
    body = json.dumps({"context": {"v": value}}).encode()  # ASCII: escapes, NaN, Infinity
    expected = sorted(("body", "context", "v", *map(str, loc)) for loc in unsendable(value, ()))
    kind, found = outcome(body)
    if expected:
        assert kind == "refused"
        assert [loc for loc, _ in found] == [tuple(loc) for loc in expected]
        assert {error_type for _, error_type in found} <= {"string_unicode", "finite_number"}
    else:
        assert (kind, found) == ("read", {"v": value})


@settings(max_examples=150, deadline=None)
@given(json_values.filter(lambda v: not unsendable(v)))
def test_escaped_or_raw_utf8_the_outcome_is_the_same(value: Any) -> None:
    # ASCII-only JSON spells characters beyond U+FFFF as surrogate-pair escapes: that sends it
    # through the careful path; raw UTF-8 goes through the fast one
    document = {"context": {"v": value, "astral": "\U0001f600"}}
    escaped = json.dumps(document, ensure_ascii=True).encode()
    raw = json.dumps(document, ensure_ascii=False).encode()
    assert b"\\ud83d\\ude00" in escaped
    assert outcome(escaped) == outcome(raw) == ("read", document["context"])


@pytest.mark.parametrize("depth", [MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1, 5000])
def test_both_paths_agree_on_how_deep_a_body_may_nest(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    fast = f'{{"context": {{"v": {nested}}}}}'.encode()
    careful = f'{{"context": {{"v": {nested}, "astral": "\\ud83d\\ude00"}}}}'.encode()
    expected = "read" if depth + 2 <= MAX_DEPTH else "refused"  # + the body and `context`
    assert outcome(fast)[0] == outcome(careful)[0] == expected


@pytest.mark.parametrize(
    "literal", ["1e999", "-1E+999", "1" + "0" * 400 + ".5", "1" + "0" * 300 + "e9", "NaN"]
)
def test_a_number_beyond_a_float_is_refused_however_it_is_spelled(literal: str) -> None:
    body = f'{{"context": {{"n": {literal}}}}}'.encode()
    assert outcome(body) == ("refused", [(("body", "context", "n"), "finite_number")])


@st.composite
def number_literals(draw: st.DrawFn) -> str:
    digits = draw(st.integers(min_value=1, max_value=330))
    mantissa = draw(st.sampled_from("123456789")) + "0" * (digits - 1)
    fraction = draw(st.sampled_from(["", ".5", ".000001"]))
    exponent = draw(st.none() | st.integers(min_value=-400, max_value=400))
    mark = draw(st.sampled_from(["e", "E", "e+", "E+"]))
    spelled = "" if exponent is None else f"{mark}{exponent}".replace("+-", "-")
    return draw(st.sampled_from(["", "-"])) + mantissa + fraction + spelled


@settings(max_examples=300, deadline=None)
@given(number_literals())
def test_a_number_is_refused_exactly_when_it_is_beyond_a_float(literal: str) -> None:
    body = f'{{"context": {{"n": {literal}}}}}'.encode()
    is_float = any(mark in literal for mark in ".eE")
    if is_float and not math.isfinite(float(literal)):
        assert outcome(body) == ("refused", [(("body", "context", "n"), "finite_number")])
    else:
        assert outcome(body)[0] == "read"


def test_a_batch_item_holding_an_unsendable_value_is_set_apart_not_the_body() -> None:
    body = b'{"notifications": [{"a": "\\ud800"}, {"b": 1}, [NaN]]}'
    batch, flawed = parse_body(body, BatchRequest, items="notifications")
    assert len(batch.notifications) == 3
    assert {index: [e["loc"] for e in errors] for index, errors in flawed.items()} == {
        0: [("a",)],
        2: [(0,)],
    }


def test_a_key_given_twice_means_its_last_value_but_an_earlier_unsendable_one_is_named() -> None:
    body = (
        b'{"notifications": [{"subject": "x\\ud800", "subject": "ok"},'
        b' {"subject": "a", "subject": "b"}]}'
    )
    batch, flawed = parse_body(body, BatchRequest, items="notifications")
    assert batch.notifications[1] == {"subject": "b"}
    assert {i: [(e["loc"], e["type"]) for e in errors] for i, errors in flawed.items()} == {
        0: [(("subject",), "string_unicode")]
    }


def test_an_integer_too_long_to_read_is_refused_where_it_is() -> None:
    limit = sys.get_int_max_str_digits()
    body = f'{{"context": {{"n": {"1" * (limit + 1)}, "m": -{"9" * limit}}}}}'.encode()
    assert outcome(body) == ("refused", [(("body", "context", "n"), "int_too_long")])


# JSON text for one batch item, spelt by hand: what `json.dumps` would never write (a key given
# twice, a lone surrogate escape, an integer of thousands of digits, NaN) mixed with the ordinary
_ATOMS = st.one_of(
    st.sampled_from(
        ["null", "true", "NaN", "-Infinity", "1e999", '"\\ud800"', '"x\\udfff"', '"\\ud83d\\ude00"']
    ),
    st.integers(min_value=4290, max_value=4310).map(lambda n: "7" * n),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=5).map(json.dumps),
)
_KEYS = st.sampled_from(['"subject"', '"context"', '"to"', '"\\udc00"', '"n"']) | _ATOMS.filter(
    lambda atom: atom.startswith('"')
)
_ITEMS = st.recursive(
    _ATOMS,
    lambda children: (
        st.lists(children, max_size=3).map(lambda xs: f"[{','.join(xs)}]")
        | st.lists(st.tuples(_KEYS, children), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"
        )
    ),
    max_leaves=12,
)
_GOOD = json.dumps({"template": "welcome", "to": ["a@example.com"]})


@settings(max_examples=300, deadline=None)
@given(_ITEMS)
def test_whatever_one_batch_item_holds_it_is_judged_alone(item: str) -> None:
    body = f'{{"notifications": [{_GOOD}, {item}, {_GOOD}]}}'.encode()
    batch, flawed = parse_body(body, BatchRequest, items="notifications")
    assert len(batch.notifications) == 3
    assert set(flawed) <= {1}
    assert batch.notifications[0] == batch.notifications[2] == json.loads(_GOOD)
