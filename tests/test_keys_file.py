"""Reading the keys file: every mistake named by its line and never with a key in it; the
start-up rules with API_KEYS and AUTH; the limits' rules over generated input."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.addresses import Address, parse_address
from app.api.caller_limits import listed, posed_address
from app.api.callers import DEFAULT_SCOPES, Caller, Scope
from app.api.keys_file import MAX_BYTES, KeysFileError, parse_keys, read_keys_file
from app.api.rate_limit import RateLimit
from app.settings import SettingsError, load_settings
from tests.keys import table, write_keys

MAIL_FROM = parse_address("Notifier <noreply@example.com>")
KEY = "a-long-secret-key"


def parse(text: str, allowed: list[str] | None = None) -> list[Any]:
    return parse_keys(
        text, source="keys.toml", allowed_senders=allowed or ["@example.com"], mail_from=MAIL_FROM
    )


def test_a_full_table_gives_its_caller_every_limit() -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    [key] = parse(
        f"""
[[keys]]
name = "billing"
sha256 = "{digest.upper()}"
templates = ["invoice*", "receipt"]
senders = ["Billing@Example.com"]
recipients = ["@EXAMPLE.com", "boss@partner.org"]
rate_limit = "600/minute"
scopes = ["send", "read"]
"""
    )
    assert key.digest == digest
    assert key.caller == Caller(
        "billing",
        scopes=frozenset({Scope.SEND, Scope.READ}),
        templates=("invoice*", "receipt"),
        senders=("billing@example.com",),
        recipients=("@example.com", "boss@partner.org"),
        rate_limit=RateLimit.parse("600/minute"),
    )


def test_a_bare_table_gets_the_default_scopes_and_admin_implies_all() -> None:
    plain, admin = parse(table("a", KEY) + table("b", KEY + "2", scopes=["admin"]))
    assert plain.caller.scopes == DEFAULT_SCOPES and plain.caller.templates is None
    assert admin.caller.scopes == frozenset(Scope)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[keys]]\nname = "a"\nkey = = "x"\n', "line 3"),  # TOML's own message
        ('[[keys]]\nname = "a"\n', "line 1: 'a' needs either key or sha256"),
        (table("a", KEY) + '\n[[keys]]\nname = "b"\nkey = "short"\n', "line 7: key:"),
        (table("a", KEY) + 'colour = "red"\n', "line 4: colour: Extra inputs"),
        ('[[keys]]\nname = "a"\nsha256 = "abc"\n', "line 3: sha256:"),
        (table("a", KEY, rate_limit="fast"), "line 4: rate_limit must look like"),
        (table("a", KEY, scopes=["write"]), "line 4: scopes"),
        (table("a", KEY, scopes=[]), "line 4: scopes"),
        (table("a", KEY, senders=["boss@elsewhere.org"]), "not within ALLOWED_SENDERS"),
        (table("a", KEY, recipients=["not an address"]), "line 4: recipients:"),
        (table("a b", KEY), "line 2: name:"),
        ('keys = "x"\n', "must be [[keys]] tables"),
        ('other = 1\n[[keys]]\nname = "a"\n', "only [[keys]] tables"),
        (table("a", KEY) + table("b", KEY), "one key is given to 'a' and 'b'"),
        (table("a", KEY) + table("a", "other-key", scopes=["read"]), "different scopes"),
    ],
)
def test_a_mistake_is_named_by_its_line_without_the_key(text: str, expected: str) -> None:
    with pytest.raises(KeysFileError) as raised:
        parse(text)
    message = str(raised.value)
    assert message.startswith("keys.toml") and expected in message, message
    assert KEY not in message and "short" not in message.replace("shorter", "")


def test_a_keys_file_larger_than_any_sane_one_is_refused_unread(tmp_path: Path) -> None:
    """Thousands of keys fit in MAX_BYTES; a file past it (a log written to the wrong path,
    say) would hold the process's memory and a thread for seconds on every change."""
    path = tmp_path / "keys.toml"
    path.write_text(table("a", KEY) + "#" * MAX_BYTES)
    with pytest.raises(KeysFileError, match=r"larger than 1 MiB") as raised:
        read_keys_file(path, allowed_senders=[], mail_from=MAIL_FROM)
    assert KEY not in str(raised.value) and len(str(raised.value)) < 300
    path.write_text(table("a", KEY) + "#" * (MAX_BYTES - 200))
    assert len(read_keys_file(path, allowed_senders=[], mail_from=MAIL_FROM)) == 1


def test_a_wrong_keys_file_stops_start_up_naming_the_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_keys(tmp_path / "keys.toml", table("a", KEY, rate_limit="fast"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEYS_FILE", str(path))
    monkeypatch.delenv("API_KEYS", raising=False)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "API_KEYS_FILE" in str(raised.value) and "line 4" in str(raised.value)


@pytest.mark.parametrize(
    ("env", "contents", "error"),
    [
        ({}, "", "API_KEYS is empty and API_KEYS_FILE is unset or holds no key"),
        ({"AUTH": "off"}, table("a", KEY), "AUTH=off, but API_KEYS_FILE is set"),
        ({"API_KEYS": "web:web-secret-key"}, "", None),  # API_KEYS alone has keys
        ({}, table("a", KEY), None),
    ],
)
def test_auth_counts_the_keys_files_keys(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    contents: str,
    error: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.delenv("AUTH", raising=False)
    monkeypatch.setenv("API_KEYS_FILE", str(write_keys(tmp_path / "keys.toml", contents)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if error is None:
        assert load_settings().auth == "on"
    else:
        with pytest.raises(SettingsError, match=error):
            load_settings()


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
domains = st.sampled_from(["example.com", "partner.org", "example.com.evil.org", "evil.org"])


@given(local=labels, domain=domains, entries=st.lists(domains, max_size=3), exact=st.booleans())
def test_a_recipient_is_listed_exactly_when_its_address_or_its_domain_is(
    local: str, domain: str, entries: list[str], exact: bool
) -> None:
    address = Address(email=f"{local}@{domain}")
    listing = tuple(f"@{d}" for d in entries) + ((address.email,) if exact else ())
    # no parent domain, no suffix: `@example.com` does not let `example.com.evil.org` in
    assert listed(address, listing) == (exact or domain in entries)


@given(
    before=st.text(alphabet=st.characters(exclude_characters="@\uff20\ufe6b"), max_size=20),
    after=st.text(alphabet=st.characters(exclude_characters="@\uff20\ufe6b"), max_size=20),
    local=labels,
    domain=domains,
    at=st.sampled_from(["@", "\uff20", "\ufe6b"]),
)
def test_a_display_name_holding_an_address_is_refused_unless_it_may_be_sent_as(
    before: str, after: str, local: str, domain: str, at: str
) -> None:
    """Whatever surrounds it, an address in a display name (in any at sign a reader sees as
    one) is caught, unless it is one the caller may send as; a name without one always passes."""
    name = f"{before} {local}{at}{domain} {after}"
    may = {f"{local}@example.com"}
    posed = posed_address(name, lambda a: a.email in may)
    assert (posed is None) == (domain == "example.com")
    assert posed_address(before + after, lambda a: False) is None


@given(
    local=labels,
    domain=domains,
    left=st.sampled_from(['"', "(", "<", "[", "'"]),
    right=st.sampled_from(['"', ")", ">", "]", "'"]),
    wrapped=st.sampled_from(["local", "domain", "both", "whole"]),
)
def test_punctuation_around_the_parts_of_an_address_does_not_hide_it(
    local: str, domain: str, left: str, right: str, wrapped: str
) -> None:
    """A reader sees `"ceo"@bank.example` or `ceo@(bank.example)` as an address: quotes and
    brackets around either part, or around both, hide none."""
    lhs = f"{left}{local}{right}" if wrapped in ("local", "both") else local
    rhs = f"{left}{domain}{right}" if wrapped in ("domain", "both") else domain
    name = f"Dear {left}{lhs}@{rhs}{right}" if wrapped == "whole" else f"Dear {lhs}@{rhs}"
    assert posed_address(name, lambda a: False) is not None
    allowed = posed_address(name, lambda a: a.email == f"{local}@{domain}".lower())
    assert allowed is None
