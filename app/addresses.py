"""Email addresses: parse the forms callers send, validate them, and render them for SMTP."""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from app.text_rules import check_one_line

# "Ada Lovelace <ada@example.com>" or "\"Lovelace, Ada\" <ada@example.com>"
_NAMED = re.compile(r'\s*(?:"(?P<quoted>[^"]*)"|(?P<plain>[^<>"]*?))\s*<(?P<email>[^<>]+)>\s*')
_SPACES = re.compile(r"\s{2,}")
MAX_NAME_LENGTH = 200


@lru_cache(maxsize=8192)
def normalised_email(email: str) -> str:
    """email-validator's syntax check (no DNS), remembered: services mail the same people."""
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{email!r} is not a valid email address: {exc}") from None


@lru_cache(maxsize=1024)
def ascii_domain(domain: str) -> str:
    """The A-label (punycode) form of a validated domain, by IDNA 2008 as email-validator
    computes it. Python's "idna" codec follows IDNA 2003, which turns faß.de into fass.de:
    another domain, someone else's mail."""
    if domain.isascii():
        return domain
    ascii_form: str = validate_email(f"a@{domain}", check_deliverability=False).ascii_domain
    return ascii_form


class Address(BaseModel):
    """A validated mailbox. `email` is normalised (Unicode domain); `smtp_email` is what goes
    on the wire: the ASCII (IDNA) form whenever the local part allows it."""

    model_config = ConfigDict(frozen=True)

    email: str = Field(examples=["ada@example.com"])
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH, examples=["Ada Lovelace"])

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_named(check_one_line(value, "an address"))
        return value

    @model_validator(mode="after")
    def _validate(self, info: ValidationInfo) -> Address:
        if info.context and info.context.get("trusted"):
            return self  # read back from our own store: validated when it was accepted
        check_one_line(self.email, "an address")
        if self.name is not None:
            check_one_line(self.name, "a display name")
        object.__setattr__(self, "email", normalised_email(self.email))
        object.__setattr__(self, "name", _tidy_name(self.name) if self.name else None)
        return self

    @cached_property
    def smtp_email(self) -> str:
        local, _, domain = self.email.rpartition("@")
        if local.isascii():
            return f"{local}@{ascii_domain(domain)}"
        return self.email

    @property
    def needs_smtputf8(self) -> bool:
        return not self.smtp_email.isascii()

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


def _tidy_name(name: str) -> str | None:
    """Without spaces at the ends, and each run of spaces one space: readers take a run of
    whitespace in a display name as one space (RFC 5322 3.2.2; Python's reader even inside
    encoded words), so that is what we store and send."""
    return _SPACES.sub(" ", name.strip()) or None


def _split_named(value: str) -> dict[str, str | None]:
    match = _NAMED.fullmatch(value)
    if match is None:
        return {"email": value.strip(), "name": None}
    name = match["quoted"] if match["quoted"] is not None else match["plain"]
    return {"email": match["email"].strip(), "name": name or None}


def parse_address(value: str) -> Address:
    return Address.model_validate(value)


def sender_allowed(address: Address, allowed: list[str], default: Address) -> bool:
    """A `from` may use the default sender, an allowed address, or any address of an allowed
    @domain. Nothing else: the service must never send as an arbitrary address."""
    email = address.email.lower()
    if email == default.email.lower():
        return True
    return any(
        address.domain == entry[1:] if entry.startswith("@") else email == entry
        for entry in allowed
    )
