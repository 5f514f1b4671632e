"""Stored rows back into records, one row at a time.

Two readers for two needs:

- `claimed` is strict: delivery must send exactly what was accepted, so a row with any value it
  cannot read raises UnreadableRow naming the columns, and the store fails that notification
  with the reason while the rest of its batch goes out.
- `shown` is total: a read endpoint answers whatever a row holds (edited by hand, written by
  another version, a time beyond the calendar). What can be read is shown; what cannot is left
  empty (null, [] or {}), an unknown status shows as `failed` (we will never send it), and the
  record's `unreadable` names what was left out.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from app.api.schemas import NotificationRequest, Status
from app.store.records import AttemptRecord, Notification, RecipientAttempt, Refusal, Skipped

# Rows were validated when accepted; reading them back skips the costly address checks.
TRUSTED = {"trusted": True}
_REQUEST_FIELDS = NotificationRequest.model_fields

T = TypeVar("T")


class UnreadableRow(ValueError):
    pass


def claimed(row: sqlite3.Row) -> Notification:
    """The row as a record to send from; raises UnreadableRow if any value cannot be read."""
    try:
        return _strict(row)
    except Exception as exc:
        problems = _lenient(row).unreadable or _brief(exc)
        raise UnreadableRow(f"the stored notification cannot be read: {problems}") from exc


def shown(row: sqlite3.Row) -> Notification:
    """The row as a record to show; never raises."""
    try:
        return _strict(row)
    except Exception:
        return _lenient(row)


def known_status(value: Any) -> Status:
    """A stored status as the API shows it: one we do not know is never sent, so `failed`."""
    try:
        return Status(value)
    except ValueError:
        return Status.FAILED


def attempt(row: sqlite3.Row) -> AttemptRecord:
    """One attempt row to show; never raises (what cannot be read is left empty)."""
    return AttemptRecord(
        at=_or(_number, row["at"], 0.0),
        outcome=_or(_text, row["outcome"], ""),
        smtp_code=_or(_code, row["smtp_code"], None),
        detail=_or(_text, row["detail"], None),
        duration_ms=_or(_finite, row["duration_ms"], 0.0),
        recipients=recipient_attempts(row["recipients"]),
    )


def recipient_attempts(value: Any) -> tuple[RecipientAttempt, ...]:
    """An attempt's stored per-recipient outcome (JSON); what cannot be read is left out."""
    try:
        items = _json(value) if value is not None else []
    except (TypeError, ValueError):
        return ()
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("email"), str):
            found.append(
                RecipientAttempt(
                    email=item["email"],
                    outcome=_or(_text, item.get("outcome"), ""),
                    code=_or(_code, item.get("code"), None),
                    message=_or(_text, item.get("message"), None),
                )
            )
    return tuple(found)


def _strict(row: sqlite3.Row) -> Notification:
    pending, delivered = row["pending"], row["delivered"]
    return Notification(
        id=_text(row["id"]),
        status=Status(row["status"]),
        caller=_text(row["caller"]),
        request=NotificationRequest.model_validate_json(row["request"], context=TRUSTED),
        message_id=_text(row["message_id"]),
        created_at=_finite(row["created_at"]),
        updated_at=_finite(row["updated_at"]),
        request_id=_optional(_text, row["request_id"]),
        subject=_optional(_text, row["subject"]),
        pending=None if pending is None else _json_texts(pending),
        delivered=None if delivered is None else _json_texts(delivered),
        refused=_refusals(_json(row["refused"])),
        suppressed=skipped(row["suppressed"]),
        last_error=_optional(_text, row["last_error"]),
        due_at=_optional(_number, row["next_attempt_at"]),
        sent_at=_optional(_number, row["sent_at"]),
        attempt_count=_count(row["attempts"]),
        lease=_count(row["lease"]),
        retried_at=_optional(_number, row["retried_at"]),
    )


def _lenient(row: sqlite3.Row) -> Notification:
    problems: list[str] = []

    def read(column: str, convert: Callable[[Any], T], fallback: T) -> T:
        value = row[column]
        if value is None and fallback is None:
            return fallback
        try:
            return convert(value)
        except Exception as exc:
            problems.append(f"{column}: {_brief(exc)}")
            return fallback

    template = read("template", _text, "")
    request = read("request", _request, None)
    if request is None:
        request = _salvage(row["request"], template)
    status = read("status", Status, Status.FAILED)  # as known_status, but noted
    notification = Notification(
        id=_as_text(row["id"]),
        status=status,
        caller=read("caller", _text, ""),
        request=request,
        message_id=read("message_id", _text, ""),
        created_at=read("created_at", _number, 0.0),
        updated_at=read("updated_at", _number, 0.0),
        request_id=read("request_id", _text, None),
        subject=read("subject", _text, None),
        pending=read("pending", _json_texts, None),
        delivered=read("delivered", _json_texts, None),
        refused=read("refused", lambda v: _refusals(_json(v)), []),
        suppressed=read("suppressed", skipped, []),
        last_error=read("last_error", _text, None),
        due_at=read("next_attempt_at", _number, None),
        sent_at=read("sent_at", _number, None),
        attempt_count=read("attempts", _count, 0),
        lease=read("lease", _count, 0),
        retried_at=read("retried_at", _number, None),
    )
    notification.unreadable = "; ".join(problems) or None
    return notification


def _request(value: Any) -> NotificationRequest:
    return NotificationRequest.model_validate_json(value, context=TRUSTED)


def _salvage(value: Any, template: str) -> NotificationRequest:
    """The fields of a stored request that still read on their own; the rest empty."""
    try:
        data = _json(value)
    except (TypeError, ValueError):
        data = None
    fields: dict[str, Any] = {"template": template, "to": []}
    if isinstance(data, dict):
        for name, info in _REQUEST_FIELDS.items():
            key = info.alias if info.alias in data else name
            if key in data and name != "template":
                with contextlib.suppress(ValidationError):
                    adapter = _field_adapter(name)
                    fields[name] = adapter.validate_python(data[key], context=TRUSTED)
    return NotificationRequest.model_construct(**fields)


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    info = _REQUEST_FIELDS[name]
    return TypeAdapter(info.rebuild_annotation())


def _or(convert: Callable[[Any], T], value: Any, fallback: T) -> T:
    try:
        return convert(value)
    except (TypeError, ValueError):
        return fallback


def _optional(convert: Callable[[Any], T], value: Any) -> T | None:
    return None if value is None else convert(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text but {type(value).__name__}")
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _number(value: Any) -> float:
    """Any number, even one beyond the calendar: the view clamps times."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number but {type(value).__name__}")
    return float(value)


def _finite(value: Any) -> float:
    number = _number(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a finite number")
    return number


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r:.40} is not a count")
    return value


def _code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an SMTP code but {type(value).__name__}")
    return value


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("not a list of addresses")
    return value


def _json(value: Any) -> Any:
    """JSON as pydantic reads it: unlike the json module it refuses escapes of lone surrogates,
    which no answer could carry (they cannot be encoded)."""
    if not isinstance(value, str | bytes):
        raise TypeError(f"not JSON but {type(value).__name__}")
    return from_json(value)


def _json_texts(value: Any) -> list[str]:
    return _texts(_json(value))


def _refusals(value: Any) -> list[Refusal]:
    if not isinstance(value, list):
        raise TypeError("not a list of refusals")
    refusals = []
    for item in value:
        if not isinstance(item, dict):
            raise TypeError("not a refusal")
        refusals.append(
            Refusal(
                email=_text(item.get("email")),
                code=_code(item.get("code")),
                message=_text(item.get("message")),
            )
        )
    return refusals


def refused_emails(value: Any) -> list[str]:
    """The addresses of a stored refused list; none if it cannot be read (a row edited by
    hand): what only lifts suppressions must not fail the retry."""
    try:
        return [r.email for r in _refusals(_json(value))]
    except (TypeError, ValueError):
        return []


def skipped(value: Any) -> list[Skipped]:
    """The recipients stored as skipped (JSON list of {email, reason}); NULL: none."""
    if value is None:
        return []
    items = _json(value)
    if not isinstance(items, list):
        raise TypeError("not a list of suppressed recipients")
    return [Skipped(email=_text(i.get("email")), reason=_text(i.get("reason"))) for i in items]


def _brief(exc: Exception) -> str:
    """An error on one line, short enough for last_error and the logs."""
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
