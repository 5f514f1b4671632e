"""The keys file (API_KEYS_FILE): one `[[keys]]` TOML table per key, with its caller's name,
the key or its SHA-256 digest, and optional scopes and limits.

A mistake is reported with the file's line (the table's, or the field's when it can be found)
and never with a key in it. Keys of one caller name (old and new, while rotating) must give
the same scopes and limits: a caller is one set of rights, whichever key it sends.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from app.addresses import Address, parse_address, sender_allowed
from app.api.api_keys import ApiKey
from app.api.callers import DEFAULT_SCOPES, Caller, Scope
from app.api.rate_limit import RateLimit
from app.webhooks.targets import MAX_URL_CHARS, RefusedTarget, parse_target

_TABLE = re.compile(r"^[ \t]*\[\[[ \t]*keys[ \t]*\]\]", re.MULTILINE)
_HEADER = re.compile(r"^[ \t]*\[", re.MULTILINE)

Entry = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
NonEmpty = Field(default=None, min_length=1)
Secret = Annotated[str, StringConstraints(min_length=16, max_length=256)]
# thousands of keys with their limits; past it the file is something else, read on every change
MAX_BYTES = 1 << 20


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and the line."""


class _KeyTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: str | None = Field(default=None, min_length=8, repr=False)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$", repr=False)
    templates: list[Annotated[str, Field(pattern=r"^[a-z0-9_*?!\[\]-]{1,128}$")]] | None = NonEmpty
    senders: list[Entry] | None = NonEmpty
    recipients: list[Entry] | None = NonEmpty
    rate_limit: str | None = None
    scopes: list[Scope] | None = NonEmpty
    callback_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    # one secret, or several while rotating (the first signs as the current one)
    webhook_secret: Secret | list[Secret] | None = Field(default=None, repr=False)


def read_keys_file(path: Path, *, allowed_senders: list[str], mail_from: Address) -> list[ApiKey]:
    """The keys the file defines; KeysFileError naming the line if any is wrong."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)  # no more: the file may grow while it is read
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise KeysFileError(f"{path}: larger than 1 MiB, more than any keys file needs")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeysFileError(f"{path}: is not UTF-8 text") from None
    return parse_keys(text, source=str(path), allowed_senders=allowed_senders, mail_from=mail_from)


def parse_keys(
    text: str, *, source: str, allowed_senders: list[str], mail_from: Address
) -> list[ApiKey]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line N, column M)"
        raise KeysFileError(f"{source}: not valid TOML: {exc}") from None
    if extra := sorted(set(document) - {"keys"}):
        raise KeysFileError(f"{source}: only [[keys]] tables belong here, not {extra[0]!r}")
    tables = document.get("keys", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise KeysFileError(f"{source}: 'keys' must be [[keys]] tables")
    starts = [text.count("\n", 0, m.start()) + 1 for m in _TABLE.finditer(text)]
    keys = []
    for index, table in enumerate(tables):
        where = _Where(text, source, starts[index] if index < len(starts) else None)
        keys.append(_key(table, where=where, allowed_senders=allowed_senders, mail_from=mail_from))
    return combine(keys, source=source)


def combine(keys: list[ApiKey], *, source: str) -> list[ApiKey]:
    """`keys` if they can all be in force together: no key twice, and one caller's keys
    with the same rights."""
    by_digest: dict[str, str] = {}
    by_name: dict[str, Caller] = {}
    for key in keys:
        if (holder := by_digest.get(key.digest)) is not None:
            whose = f"{holder!r} twice" if holder == key.name else f"{holder!r} and {key.name!r}"
            raise KeysFileError(f"{source}: one key is given to {whose}")
        by_digest[key.digest] = key.name
        if by_name.setdefault(key.name, key.caller) != key.caller:
            raise KeysFileError(
                f"{source}: the keys of {key.name!r} give different scopes, limits or webhook"
                " settings; keys of one caller (old and new, while rotating) must give the same"
            )
    return keys


class _Where:
    """The line of a table, or of one of its fields, for messages."""

    def __init__(self, text: str, source: str, line: int | None) -> None:
        self.text, self.source, self.line = text, source, line

    def error(self, message: str, field: str | None = None) -> KeysFileError:
        line = self._field_line(field) if field else None
        line = line or self.line
        place = f"line {line}" if line else "a [[keys]] table"
        return KeysFileError(f"{self.source}, {place}: {message}")

    def _field_line(self, field: str) -> int | None:
        if self.line is None:
            return None
        lines = self.text.splitlines()
        pattern = re.compile(rf"[ \t]*{re.escape(field)}[ \t]*=")
        for number in range(self.line, len(lines)):  # the lines after the table's header
            if _HEADER.match(lines[number]):
                return None
            if pattern.match(lines[number]):
                return number + 1
        return None


def _key(
    table: dict[str, Any], *, where: _Where, allowed_senders: list[str], mail_from: Address
) -> ApiKey:
    try:
        entry = _KeyTable.model_validate(table)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        field = str(first["loc"][0]) if first["loc"] else None
        named = f"{field}: " if field else ""
        raise where.error(f"{named}{first['msg']}", field) from None
    if (entry.key is None) == (entry.sha256 is None):
        raise where.error(f"{entry.name!r} needs either key or sha256 (not both)")
    if entry.key is not None:
        digest = hashlib.sha256(entry.key.encode()).hexdigest()
    else:
        assert entry.sha256 is not None
        digest = entry.sha256.lower()
    try:
        rate_limit = RateLimit.parse(entry.rate_limit) if entry.rate_limit else None
    except ValueError as exc:
        raise where.error(f"rate_limit {exc}", "rate_limit") from None
    scopes = frozenset(entry.scopes) if entry.scopes else DEFAULT_SCOPES
    if entry.callback_url is not None:
        try:
            parse_target(entry.callback_url)  # where it leads: checked with each request
        except RefusedTarget as exc:
            raise where.error(f"callback_url {exc}", "callback_url") from None
    secrets = entry.webhook_secret
    if isinstance(secrets, list) and not secrets:
        raise where.error("webhook_secret: give at least one secret", "webhook_secret")
    caller = Caller(
        entry.name,
        scopes=frozenset(Scope) if Scope.ADMIN in scopes else scopes,
        templates=tuple(entry.templates) if entry.templates else None,
        senders=_senders(entry.senders, where, allowed_senders, mail_from),
        recipients=_mailboxes(entry.recipients, where, "recipients"),
        rate_limit=rate_limit,
        callback_url=entry.callback_url,
        webhook_secrets=tuple([secrets] if isinstance(secrets, str) else secrets or ()),
    )
    return ApiKey(caller=caller, digest=digest)


def _mailboxes(entries: list[str] | None, where: _Where, field: str) -> tuple[str, ...] | None:
    """Addresses and @domains, normalised as requests' addresses are, for comparing."""
    if entries is None:
        return None
    normalised = []
    for entry in entries:
        try:
            normalised.append(
                "@" + parse_address("postmaster" + entry).domain
                if entry.startswith("@")
                else parse_address(entry).email.lower()
            )
        except ValueError:
            raise where.error(
                f"{field}: {entry[:80]!r} is neither an address nor an @domain", field
            ) from None
    return tuple(normalised)


def _senders(
    entries: list[str] | None, where: _Where, allowed_senders: list[str], mail_from: Address
) -> tuple[str, ...] | None:
    senders = _mailboxes(entries, where, "senders")
    for entry in senders or ():
        within = (
            entry in allowed_senders
            if entry.startswith("@")
            else sender_allowed(parse_address(entry), allowed_senders, mail_from)
        )
        if not within:
            raise where.error(
                f"senders: {entry!r} is not within ALLOWED_SENDERS; a key can only narrow it",
                "senders",
            )
    return senders
