"""Which refusals are hard bounces (HARD_BOUNCE_CODES), and the settings of suppression and
unsubscribe: each wrong one stops start-up naming itself."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.delivery.bounces import is_hard_bounce
from app.settings import Settings, SettingsError, load_settings

DEFAULT = Settings(_env_file=None, auth="off").hard_bounce_codes


@pytest.mark.parametrize(
    ("code", "message", "hard"),
    [
        (550, "5.1.1 no such user", True),
        (550, "5.1.10 null MX", True),
        (554, "5.1.2 bad destination system", True),  # the enhanced code decides
        (550, "5.7.1 refused as spam", False),
        (550, "5.2.2 mailbox full", False),
        (550, "no such user here", True),
        (551, "user not local", True),
        (553, "mailbox name not allowed", True),
        (554, "transaction failed", False),
        (552, "5.3.4 message too big", False),
        (550, "5.1.1.2 is not an enhanced code", True),  # then the basic one decides
    ],
)
def test_the_enhanced_code_decides_else_the_basic_one(code: int, message: str, hard: bool) -> None:
    assert is_hard_bounce(code, message, codes=DEFAULT) is hard


def test_the_codes_are_a_setting() -> None:
    codes = Settings(_env_file=None, auth="off", hard_bounce_codes="554, 5.2.2").hard_bounce_codes
    assert codes == ("554", "5.2.2")
    assert is_hard_bounce(550, "5.2.2 mailbox full", codes=codes)
    assert not is_hard_bounce(550, "5.1.1 no such user", codes=codes)
    assert is_hard_bounce(554, "rejected", codes=codes)
    off = Settings(_env_file=None, auth="off", hard_bounce_codes="off").hard_bounce_codes
    assert off == () and not is_hard_bounce(550, "5.1.1 no such user", codes=off)


@given(code=st.integers(200, 599), message=st.text(max_size=40))
def test_any_reply_is_judged_without_an_error(code: int, message: str) -> None:
    assert isinstance(is_hard_bounce(code, message, codes=DEFAULT), bool)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("hard_bounce_codes", "550,4.1.1", "neither a reply code"),
        ("hard_bounce_codes", "5.1", "neither a reply code"),
        ("public_url", "notify.example.com", "like https://"),
        ("public_url", "https://notify.example.com/\r\nX-Evil: 1", "like https://"),
        ("public_url", "https://notify.example.com/?a=1", "like https://"),
        ("public_url", "https://exa mple.com", "like https://"),
        ("unsubscribe_secret", "short", "at least 32 characters"),
    ],
)
def test_a_wrong_setting_is_refused_naming_it(name: str, value: str, says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        values: dict[str, Any] = {name: value}
        Settings(_env_file=None, auth="off", **values)
    [error] = raised.value.errors()
    assert error["loc"] == (name,) and says in error["msg"]


def test_a_short_secret_stops_start_up_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("UNSUBSCRIBE_SECRET", "hunter2-hunter2")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "UNSUBSCRIBE_SECRET" in str(raised.value) and "hunter2" not in str(raised.value)


def test_the_public_url_loses_its_trailing_slash_and_the_secret_stays_secret() -> None:
    settings = Settings(
        _env_file=None,
        auth="off",
        public_url="https://notify.example.com/mail/",
        unsubscribe_secret="x" * 40,
    )
    assert settings.public_url == "https://notify.example.com/mail"
    assert "x" * 40 not in repr(settings)
