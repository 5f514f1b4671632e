"""Settings come from the environment; a wrong one stops start-up and names itself."""

from __future__ import annotations

import math
import socket
from hashlib import sha256
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic.types import AllowInfNan

from app.delivery.smtp_session import Sessions
from app.settings import YEAR, Settings, SettingsError, SmtpSecurity, load_settings


def test_defaults_point_at_a_local_mailhog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env here
    monkeypatch.setenv("AUTH", "off")
    settings = load_settings()
    assert (settings.smtp_host, settings.smtp_port) == ("localhost", 1025)
    assert settings.smtp_security is SmtpSecurity.NONE
    assert settings.api_keys == []


def test_empty_api_keys_stop_start_up_unless_auth_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    monkeypatch.delenv("API_KEYS", raising=False)
    monkeypatch.delenv("AUTH", raising=False)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "  AUTH: " in message and "API_KEYS is empty" in message
    assert "set API_KEYS" in message and "set AUTH=off" in message
    monkeypatch.setenv("API_KEYS", "")  # empty is unset, not a choice
    with pytest.raises(SettingsError):
        load_settings()
    monkeypatch.setenv("AUTH", "Off")
    settings = load_settings()
    assert (settings.auth, settings.api_keys) == ("off", [])


def test_keys_need_no_auth_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH", raising=False)
    monkeypatch.setenv("API_KEYS", "web:web-secret-key")
    settings = load_settings()
    assert settings.auth == "on" and [k.name for k in settings.api_keys] == ["web"]


def test_auth_off_beside_keys_is_a_contradiction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("API_KEYS", "web:web-secret-key")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "  AUTH: " in str(raised.value) and "API_KEYS is set" in str(raised.value)


def test_lists_are_comma_separated_and_names_case_insensitive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("api_keys", "billing:one-secret, two-secret ,,")
    monkeypatch.setenv("ALLOWED_SENDERS", "@Example.COM, Help Desk <help@other.org>")
    monkeypatch.setenv("MAIL_FROM", "Ünal Shop <shop@example.com>")
    monkeypatch.setenv("SMTP_USERNAME", "")
    settings = load_settings()
    assert [k.name for k in settings.api_keys] == [
        "billing",
        f"key-{sha256(b'two-secret').hexdigest()[:8]}",
    ]
    assert settings.allowed_senders == ["@example.com", "help@other.org"]
    assert (settings.mail_from.name, settings.mail_from.email) == ("Ünal Shop", "shop@example.com")
    assert settings.smtp_username is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_PORT", "smtp"),
        ("SMTP_PORT", "70000"),
        ("SMTP_SECURITY", "ssl"),
        ("SMTP_TIMEOUT", "-1"),
        ("SMTP_CA_FILE", "/no/such/ca.pem"),
        ("SMTP_HOST", "mail host"),
        ("SMTP_HOST", "mail.example.com\n"),
        ("SMTP_HOST", "mail\x07host"),
        ("SMTP_HOST", "smtp://mail.example.com"),
        ("SMTP_HOST", "mail.example.com:25"),
        ("MAIL_FROM", "not an address"),
        ("SMTP_ENVELOPE_FROM", "not an address"),
        ("SMTP_ENVELOPE_FROM", "Bounces <bounces@example.com>"),
        ("SMTP_LOCAL_HOSTNAME", "my host"),
        ("SMTP_LOCAL_HOSTNAME", "-notifier.example.com"),
        ("SMTP_LOCAL_HOSTNAME", "notifier..example.com"),
        ("SMTP_LOCAL_HOSTNAME", "[192.0.2.300]"),
        ("SMTP_PROBE_INTERVAL", "0"),
        ("ALLOWED_SENDERS", "@"),
        ("DATABASE_URL", "mysql://db/x"),
        ("DATABASE_URL", "sqlite:///"),
        ("DATABASE_TIMEOUT", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("API_KEYS", "short"),
        ("API_KEYS", "bad name:long-enough-key"),
        ("API_KEYS", "a:sha256:abc"),
        ("API_KEYS", "a:key-number-1,a:key-number-2"),
        ("RATE_LIMIT", "fast"),
        ("ATTACHMENT_TYPES", "pdf"),
        ("AUTH", "maybe"),
    ],
)
def test_a_wrong_setting_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert f"  {name}: " in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///./data/notifications.db",
        "postgresql://notifier:secret@db:5432/notifier",
        "postgresql+asyncpg://notifier:secret@db:5432/notifier",
    ],
)
def test_database_url_takes_a_sqlite_file_or_a_postgresql_server(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATABASE_TIMEOUT", "2.5")
    settings = load_settings()
    assert (settings.database_url, settings.database_timeout) == (url, 2.5)


def test_secrets_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2")
    monkeypatch.setenv("API_KEYS", "web:key-12345")
    monkeypatch.setenv("DATABASE_URL", "postgresql://notifier:db-secret@db:5432/notifier")
    assert "db-secret" not in repr(load_settings())
    assert "hunter2" not in repr(load_settings())
    assert "key-12345" not in repr(load_settings())
    assert sha256(b"key-12345").hexdigest() not in repr(load_settings())


def test_keys_are_kept_only_as_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = sha256(b"hashed-secret").hexdigest()
    monkeypatch.setenv("API_KEYS", f"ops:sha256:{digest},web:plain-secret")
    keys = load_settings().api_keys
    assert [(k.name, k.digest) for k in keys] == [
        ("ops", digest),
        ("web", sha256(b"plain-secret").hexdigest()),
    ]


def test_rate_limit_reads_like_prose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("RATE_LIMIT", "30/Second")
    limit = load_settings().rate_limit
    assert limit is not None and (limit.count, limit.seconds) == (30, 1.0)
    monkeypatch.setenv("RATE_LIMIT", "off")
    assert load_settings().rate_limit is None


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://127.0.0.1:6379/0",
        "redis://redis",
        "rediss://user:secret@cache.example.com:6380/2",
    ],
)
def test_rate_limit_storage_is_memory_or_a_redis_url(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("RATE_LIMIT_STORAGE", url)
    assert load_settings().rate_limit_storage == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_STORAGE", "memory"),
        ("RATE_LIMIT_STORAGE", "redis://"),
        ("RATE_LIMIT_STORAGE", "redis://host:port/0"),
        ("RATE_LIMIT_STORAGE", "redis://host:6379/zero"),
        ("RATE_LIMIT_STORAGE", "memcached://host:11211"),
        ("RATE_LIMIT_KEY_PREFIX", "two words"),
    ],
)
def test_a_wrong_rate_limit_storage_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert f"  {name}: " in str(raised.value)
    if name == "RATE_LIMIT_STORAGE":
        assert "memory://" in str(raised.value) and "redis://host:port/db" in str(raised.value)


def test_smtp_identity_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env here
    monkeypatch.setenv("AUTH", "off")
    settings = load_settings()
    assert (settings.smtp_local_hostname, settings.smtp_envelope_from) == (None, None)
    assert Sessions(settings).local_hostname == socket.getfqdn()  # as before the setting

    monkeypatch.setenv("SMTP_LOCAL_HOSTNAME", "notifier.example.com")
    monkeypatch.setenv("SMTP_ENVELOPE_FROM", "Bounces@Bücher.example")
    settings = load_settings()
    assert Sessions(settings).local_hostname == "notifier.example.com"
    assert settings.smtp_envelope_from is not None
    assert settings.smtp_envelope_from.smtp_email == "Bounces@xn--bcher-kva.example"
    for literal in ("[192.0.2.1]", "[IPv6:2001:db8::1]", "mail.example.com."):
        monkeypatch.setenv("SMTP_LOCAL_HOSTNAME", literal)
        assert load_settings().smtp_local_hostname == literal


@given(
    st.text(min_size=1, max_size=300)
    | st.from_regex(r"[A-Za-z0-9.:\[\]-]{1,70}", fullmatch=True)  # near misses and hits
)
def test_a_local_hostname_is_either_refused_or_safe_on_the_ehlo_line(name: str) -> None:
    try:
        settings = Settings(_env_file=None, auth="off", smtp_local_hostname=name)
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] == ("smtp_local_hostname",)
        return
    accepted = settings.smtp_local_hostname
    assert accepted == name  # kept as given, never rewritten
    assert accepted.isascii() and len(accepted) <= 255
    assert not any(c.isspace() or not c.isprintable() for c in accepted)


def _durations() -> dict[str, tuple[float, float]]:
    """Every float setting, with the range it promises: each one is a duration in seconds."""
    durations: dict[str, tuple[float, float]] = {}
    for name, field in Settings.model_fields.items():
        if field.annotation is not float:
            continue
        lows = [getattr(rule, bound, None) for rule in field.metadata for bound in ("ge", "gt")]
        highs = [getattr(rule, bound, None) for rule in field.metadata for bound in ("le", "lt")]
        durations[name] = (
            max((b for b in lows if b is not None), default=-math.inf),
            min((b for b in highs if b is not None), default=math.inf),
        )
    return durations


DURATIONS = _durations()


def test_every_float_setting_is_a_finite_bounded_duration() -> None:
    assert {"smtp_timeout", "idempotency_ttl", "database_busy_timeout"} <= set(DURATIONS)
    for name, (low, high) in DURATIONS.items():
        assert low >= 0 and high <= YEAR, name
        assert AllowInfNan(False) in Settings.model_fields[name].metadata, name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_TIMEOUT", "inf"),
        ("SMTP_TIMEOUT", "3601"),
        ("RETRY_MAX_SECONDS", "inf"),
        ("IDEMPOTENCY_TTL", "1e400"),
        ("DATABASE_BUSY_TIMEOUT", "1e30"),
        ("MAX_AGE", "-Infinity"),
    ],
)
def test_a_duration_that_never_ends_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert f"  {name}: " in str(raised.value)


@given(
    name=st.sampled_from(sorted(DURATIONS)),
    value=st.floats().map(repr)
    | st.sampled_from(["1e400", "-1e400", "Infinity", "+inf", "NaN", "1e30", "0", "-0"])
    | st.text(max_size=12),
)
def test_a_duration_is_refused_naming_it_or_finite_and_in_bounds(name: str, value: str) -> None:
    try:
        settings = Settings(_env_file=None, auth="off", **{name: value})  # type: ignore[arg-type]
    except ValidationError as exc:
        assert [error["loc"] for error in exc.errors()] == [(name,)]
        return
    accepted = getattr(settings, name)
    low, high = DURATIONS[name]
    assert math.isfinite(accepted) and low <= accepted <= high <= YEAR


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
    ids=["empty", "text", "broken PEM"],
)
def test_a_ca_file_without_certificates_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(content)
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("SMTP_SECURITY", "tls")
    monkeypatch.setenv("SMTP_CA_FILE", str(ca_file))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "  SMTP_CA_FILE: " in message and "PEM" in message
    assert "SMTP_SECURITY" not in message and "SMTP_PORT" not in message


def test_a_pem_ca_file_is_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("SMTP_CA_FILE", str(ca_file))
    assert load_settings().smtp_ca_file == ca_file


@pytest.mark.parametrize(
    "host", ["localhost", "mailhog", "mail_hog", "smtp.example.com.", "192.0.2.1", "2001:db8::1"]
)
def test_smtp_host_takes_names_and_addresses(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("AUTH", "off")
    monkeypatch.setenv("SMTP_HOST", host)
    assert load_settings().smtp_host == host


@given(
    st.text(min_size=1, max_size=80) | st.from_regex(r"[A-Za-z0-9._:\[\] -]{1,40}", fullmatch=True)
)
def test_an_smtp_host_is_refused_naming_it_or_a_plain_name(host: str) -> None:
    try:
        settings = Settings(_env_file=None, auth="off", smtp_host=host)
    except ValidationError as exc:
        assert [error["loc"] for error in exc.errors()] == [("smtp_host",)]
        return
    assert settings.smtp_host == host and host.isascii() and len(host) <= 253
    assert not any(c.isspace() or not c.isprintable() or c in "/@[]" for c in host)


def test_auth_failure_limit_reads_like_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH", "off")
    limit = load_settings().auth_failure_limit
    assert limit is not None and (limit.count, limit.seconds) == (20, 60.0)
    monkeypatch.setenv("AUTH_FAILURE_LIMIT", "5/Hour")
    limit = load_settings().auth_failure_limit
    assert limit is not None and (limit.count, limit.seconds) == (5, 3600.0)
    monkeypatch.setenv("AUTH_FAILURE_LIMIT", "off")
    assert load_settings().auth_failure_limit is None
    monkeypatch.setenv("AUTH_FAILURE_LIMIT", "20 a minute")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "  AUTH_FAILURE_LIMIT: " in str(raised.value)


def test_the_metrics_token_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH", "off")
    assert load_settings().metrics_token is None
    monkeypatch.setenv("METRICS_TOKEN", "Zm9vYmFyYmF6cXV4cXV1eA==")
    settings = load_settings()
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "Zm9vYmFyYmF6cXV4cXV1eA=="
    assert "Zm9vYmFy" not in repr(settings) and "Zm9vYmFy" not in str(settings)


@given(st.text(max_size=40))
def test_a_metrics_token_is_refused_naming_it_or_sendable_as_a_bearer_token(
    token: str,
) -> None:
    try:
        settings = Settings(_env_file=None, auth="off", metrics_token=token)
    except ValidationError as exc:
        assert [error["loc"] for error in exc.errors()] == [("metrics_token",)]
        assert "at least 16 characters" in exc.errors()[0]["msg"]  # ours, not the value
        return
    assert settings.metrics_token is not None
    assert len(token) >= 16 and token == token.strip() and token.isascii()
    assert not any(c in token for c in ' ",\\\t\n')
