"""What a caller's key lets a notification be: its template, its sender, its recipients, and a
sender's display name that does not pose as another address. Each refusal is a 422 naming
the field (`template`, `from`, `to[2]`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from fnmatch import fnmatchcase

from app.addresses import Address, parse_address, sender_allowed
from app.api.callers import Caller
from app.api.schemas import NotificationRequest
from app.errors import InvalidRequest
from app.settings import Settings

# A word holding an @: a reader sees `"ceo"@bank.example`, `ceo@(bank.example)` and
# `a@b.example@c.example` as addresses, so the punctuation around its parts ends nothing.
_AT_WORD = re.compile(r"\S*@\S*")
# Quotes and brackets a reader looks through, dropped before the word is read as an address.
_WRAPPERS = re.compile(r"[<>()\[\]{}\"',;:]")


def check_template(request: NotificationRequest, caller: Caller) -> None:
    if not may_use_template(caller, request.template):
        raise InvalidRequest(
            ("body", "template"),
            f"the key of {caller.name!r} may not send template {request.template!r}",
        )


def may_use_template(caller: Caller, name: str) -> bool:
    """Whether the key's templates (names or globs) hold `name`: for sending, previewing and
    listing alike, since a preview shows exactly what the template would send."""
    allowed = caller.templates
    return allowed is None or any(fnmatchcase(name, glob) for glob in allowed)


def check_sender(request: NotificationRequest, caller: Caller, settings: Settings) -> None:
    """After ALLOWED_SENDERS' check: the key's own senders, and the display names."""
    _check_reply_to_name(request, caller, settings)
    sender = request.sender
    if sender is None:
        return  # MAIL_FROM, as the operator wrote it
    if not may_send_as(caller, sender, settings):
        raise InvalidRequest(
            ("body", "from"), f"the key of {caller.name!r} may not send as {sender.email!r}"
        )
    if sender.name and (
        posed := posed_address(sender.name, lambda a: may_send_as(caller, a, settings))
    ):
        raise InvalidRequest(
            ("body", "from"),
            f"the display name holds {posed[:80]!r}, an address the key of {caller.name!r}"
            " may not send as: a name must not pose as another sender",
        )


def _check_reply_to_name(request: NotificationRequest, caller: Caller, settings: Settings) -> None:
    # Reply-To's name shows beside the sender's in a reader: the same rule, or a restricted
    # key could sign its replies as anyone ("ceo@example.com" <x@elsewhere>)
    reply_to = request.reply_to
    if (
        reply_to is not None
        and reply_to.name
        and (posed := posed_address(reply_to.name, lambda a: may_send_as(caller, a, settings)))
    ):
        raise InvalidRequest(
            ("body", "reply_to"),
            f"the display name holds {posed[:80]!r}, an address the key of {caller.name!r}"
            " may not send as: a name must not pose as another sender",
        )


def check_recipients(request: NotificationRequest, caller: Caller) -> None:
    allowed = caller.recipients
    if allowed is None:
        return
    for field in ("to", "cc", "bcc"):
        for index, address in enumerate(getattr(request, field)):
            if not listed(address, allowed):
                raise InvalidRequest(
                    ("body", field, index),
                    f"the key of {caller.name!r} may not send to {address.email!r}",
                )
            if routes_onward(address, allowed):
                raise InvalidRequest(
                    ("body", field, index),
                    f"the key of {caller.name!r} may not send to {address.email!r}: '%' or '!'"
                    f" in its local part can have {address.domain}'s server forward it elsewhere",
                )


def routes_onward(address: Address, allowed: tuple[str, ...]) -> bool:
    """Admitted for its domain only, with the old routing syntax in its local part
    (`eve%evil.org@example.com`, `evil.org!eve@example.com`), which some servers still follow:
    a key limited to a domain must not reach beyond it that way. An address listed whole may."""
    local = address.email.rpartition("@")[0]
    return ("%" in local or "!" in local) and address.email.lower() not in allowed


def may_send_as(caller: Caller, address: Address, settings: Settings) -> bool:
    """Within ALLOWED_SENDERS (MAIL_FROM always), and within the key's senders if it has any
    (MAIL_FROM always too: it is the service's own address, the one used without `from`)."""
    if not sender_allowed(address, settings.allowed_senders, settings.mail_from):
        return False
    if caller.senders is None:
        return True
    return address.email.lower() == settings.mail_from.email.lower() or listed(
        address, caller.senders
    )


def listed(address: Address, entries: tuple[str, ...]) -> bool:
    """`entries` (normalised addresses and @domains) hold the address or its domain."""
    return address.email.lower() in entries or "@" + address.domain in entries


def posed_address(name: str, may: Callable[[Address], bool]) -> str | None:
    """The first address-like token in a display name that `may` does not allow, read as a
    reader would see it: compatibility forms folded (the fullwidth at sign U+FF20 shows as
    an @) and invisible format characters dropped (a zero-width space splits nothing)."""
    seen = "".join(
        c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf"
    )
    for match in _AT_WORD.finditer(seen):
        token = _WRAPPERS.sub("", match[0]).rstrip(".")
        local, _, domain = token.partition("@")
        if not local or not domain:
            continue  # "Ada @ home": no address on one side of it
        try:
            address = parse_address(token)
        except ValueError:
            return token  # looks like an address, is none we could allow
        if not may(address):
            return token
    return None
