"""Which text and values a request may carry, decided before the 202 so that nothing accepted
fails, or reads differently, when the mail is built.

- All text must be encodable as UTF-8. JSON can spell a lone surrogate (`"\\ud800"`) and Python
  keeps it, but no mail, database row or JSON answer can hold it.
- Text that becomes part of one header line (subject, display names, custom header values)
  must not contain control characters (U+0000-U+001F and U+007F-U+009F: CR, LF, TAB, NUL, NEL
  U+0085 among them) nor the line and paragraph separators U+2028 and U+2029: each breaks a
  header, or becomes a line break on the reader's side. Format characters (category Cf: the
  zero-width joiner inside emoji, direction marks) are ordinary text in many languages and
  stay allowed.
- Template context holds JSON values; numbers must be finite. Python's JSON reader accepts
  NaN, Infinity and 1e999 (which overflows to infinity) and a template would render them as
  "nan" or "inf".
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_encodable(value: str, what: str) -> str:
    """`value` unchanged if UTF-8 can encode it; a ValueError naming `what` if not."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            raise ValueError(
                f"{what} contains a lone surrogate (U+{code:04X}) at position {exc.start}:"
                " in JSON, \\ud800-\\udfff escapes must come in high-low pairs"
            ) from None
    return value


def check_one_line(value: str, what: str) -> str:
    """`value` unchanged if it can be part of one header line; a ValueError naming `what` and
    the character if not."""
    return check_line_breaks(check_encodable(value, what), what)


def check_line_breaks(value: str, what: str) -> str:
    """`value` unchanged if it holds nothing that breaks a line; a ValueError if it does."""
    if found := _BREAKING.search(value):
        raise ValueError(
            f"{what} must not contain CR, LF, other control characters or line separators:"
            f" U+{ord(found[0]):04X} at position {found.start()}"
        )
    return value


def check_json_values(value: Any, what: str) -> Any:
    """`value` unchanged if every string in it (keys too) is encodable and every number is
    finite; a ValueError naming the first offending path if not."""
    try:
        # one pass in C for the usual, valid case
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        _walk(value, what)
    return value


def _walk(value: Any, what: str) -> None:
    """Find and name the first offending value; a loop, not recursion, so that no nesting
    depth can exhaust the stack (the depth limit is checked later, with its setting)."""
    pending: list[tuple[Any, str]] = [(value, what)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            check_encodable(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path} is {item}; only finite numbers are allowed")
        elif isinstance(item, dict):
            for key in item:
                check_encodable(str(key), f"a key in {path}")
            pending.extend((child, f"{path}[{key!r}]") for key, child in reversed(item.items()))
        elif isinstance(item, list | tuple):
            pending.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))


# Validation context keys. TRUSTED: read back from our own store, checked when accepted (rules
# added later must not make stored notifications unreadable; the mail writer encodes whatever
# UTF-8 can). SCANNED: the request body was searched whole and cannot spell a lone surrogate or
# a number beyond a float (app.api.json_body), so only the line rule is left to check: that
# spares the accept path a walk of every text and of the context.
TRUSTED = "trusted"
SCANNED = "scanned"


def _said(info: ValidationInfo, *keys: str) -> bool:
    context = info.context
    return context is not None and any(context.get(key) for key in keys)


def _text(value: str, info: ValidationInfo) -> str:
    return value if _said(info, TRUSTED, SCANNED) else check_encodable(value, "the text")


def _one_line(value: str, info: ValidationInfo) -> str:
    if _said(info, TRUSTED):
        return value
    if _said(info, SCANNED):
        return check_line_breaks(value, "the text")
    return check_one_line(value, "the text")


def _context(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    return value if _said(info, TRUSTED, SCANNED) else check_json_values(value, "context")


# For request models; the field's name is in the error's `loc`. A length limit goes before the
# check, as in Annotated[str, StringConstraints(max_length=9), TEXT]: put after it (as
# Annotated[Text, StringConstraints(...)] does), pydantic counts the value's "items".
TEXT = AfterValidator(_text)
ONE_LINE = AfterValidator(_one_line)
Text = Annotated[str, TEXT]
OneLine = Annotated[str, ONE_LINE]
Context = Annotated[dict[str, Any], AfterValidator(_context)]
