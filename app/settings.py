"""The service's settings: one typed object, read from the environment or `.env` once."""

from __future__ import annotations

import ipaddress
import re
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.addresses import Address, parse_address
from app.api.api_keys import ApiKey, parse_api_key
from app.api.keys_file import read_keys_file
from app.api.rate_limit import MEMORY, RateLimit
from app.store.url import parse_database_url
from app.webhooks.targets import split_entry

DEFAULT_ATTACHMENT_TYPES = (
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "text/plain",
    "text/csv",
    "text/calendar",
)
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*/[A-Za-z0-9][A-Za-z0-9_.+-]*")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MIN_TOKEN = 16
# RFC 6750's b64token: what `Authorization: Bearer` can carry
_TOKEN = re.compile(rf"[A-Za-z0-9._~+/-]{{{_MIN_TOKEN},}}=*")
_BOUNCE_CODE = re.compile(r"5[0-9][0-9]|5\.[0-9]{1,3}\.(?:[0-9]{1,3}|[xX])")
_HOST_NAME_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
YEAR = 365 * DAY

# Every duration setting, in seconds: a finite number (`inf`, `nan` and `1e400`, which reads as
# inf, are refused: a timeout that never ends stops delivery without a word), never negative;
# each setting gives its own upper bound (`le=HOUR`, at most YEAR; a bound given here would
# override the field's), and tests/test_settings.py checks that every one does.
Seconds = Annotated[float, Field(allow_inf_nan=False, ge=0)]


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `SMTP_USERNAME=` in .env means "not set", not ""
    )

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_timeout: Seconds = Field(default=10.0, gt=0, le=HOUR)
    smtp_ca_file: FilePath | None = None
    smtp_idle_seconds: Seconds = Field(default=30.0, gt=0, le=HOUR)
    # the name we greet with (EHLO); unset: this machine's fully qualified name
    smtp_local_hostname: str | None = None
    # the return path (MAIL FROM) of every message; unset: the message's sender
    smtp_envelope_from: Annotated[Address | None, NoDecode] = None
    # readiness asks the SMTP server for news at most this often (deliveries count as news)
    smtp_probe_interval: Seconds = Field(default=60.0, gt=0, le=DAY)

    mail_from: Annotated[Address, NoDecode] = Field(
        default_factory=lambda: parse_address("Notifier <noreply@example.com>")
    )
    allowed_senders: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # sqlite:///file or postgresql://user:password@host/db; kept out of the repr (password)
    database_url: str = Field(default="sqlite:///./data/notifications.db", repr=False)
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    # keys with scopes and limits (TOML); read again while the service runs (app.api.keyring)
    api_keys_file: Path | None = None
    # after api_keys and api_keys_file: its check reads them
    auth: Literal["on", "off"] = "on"
    rate_limit: Annotated[RateLimit | None, NoDecode] = Field(
        default_factory=lambda: RateLimit.parse("1200/minute")
    )
    # where RATE_LIMIT is counted: memory:// (each process on its own) or Redis (shared)
    rate_limit_storage: str = MEMORY
    # names this deployment's keys in a shared Redis, so that several can share one
    rate_limit_key_prefix: str = "notifier"
    # failed authentications per client address, counted where RATE_LIMIT is; past it, 429
    auth_failure_limit: Annotated[RateLimit | None, NoDecode] = Field(
        default_factory=lambda: RateLimit.parse("20/minute")
    )
    # unset: /metrics is open; set: it needs `Authorization: Bearer <token>`
    metrics_token: SecretStr | None = None
    # signs the console's session and CSRF cookies; unset: a random one per process (sessions
    # end with the process and are not shared by replicas)
    console_secret: SecretStr | None = None
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30, allow_inf_nan=False)
    templates_dir: Path = Path("templates")

    max_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    max_recipients: int = Field(default=50, ge=1)
    max_batch: int = Field(default=500, ge=1, le=5000)
    max_context_bytes: int = Field(default=64 * 1024, ge=64)
    max_context_depth: int = Field(default=8, ge=1, le=64)
    max_attachment_bytes: int = Field(default=5 * 2**20, ge=1)
    max_attachments_bytes: int = Field(default=10 * 2**20, ge=1)
    attachment_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ATTACHMENT_TYPES)
    )

    max_attempts: int = Field(default=10, ge=1)
    retry_base_seconds: Seconds = Field(default=30.0, gt=0, le=DAY)
    retry_max_seconds: Seconds = Field(default=3600.0, gt=0, le=WEEK)
    max_age: Seconds = Field(default=DAY, gt=0, le=YEAR)
    delivery_concurrency: int = Field(default=32, ge=1, le=256)
    poll_interval: Seconds = Field(default=0.5, gt=0, le=60)
    queue_high_water: int = Field(default=50_000, ge=1)
    max_schedule_ahead: Seconds = Field(default=30 * DAY, gt=0, le=YEAR)
    idempotency_ttl: Seconds = Field(default=DAY, gt=0, le=YEAR)
    shutdown_grace_seconds: Seconds = Field(default=10.0, ge=0, le=HOUR)
    # embedded: this process also delivers (the accepting request sends at once); off: it
    # only accepts, and `notifier worker` processes deliver
    delivery: Literal["embedded", "off"] = "embedded"

    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    database_busy_timeout: Seconds = Field(default=5.0, ge=0, le=HOUR)
    # PostgreSQL: every database call ends within this many seconds (else 503, try again)
    database_timeout: Seconds = Field(default=5.0, gt=0, le=HOUR)

    # status webhooks (app.webhooks): the secret(s) signing them where the key has none,
    # whitespace-separated while rotating (the first is the current one)
    webhook_secret: SecretStr | None = None
    webhook_retry_base_seconds: Seconds = Field(default=10.0, gt=0, le=DAY)
    webhook_retry_max_seconds: Seconds = Field(default=HOUR, gt=0, le=WEEK)
    webhook_max_age: Seconds = Field(default=DAY, gt=0, le=YEAR)
    # `host` or `host:port` callback URLs may name although http:// or not public (development)
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    # where recipients reach this service (https://notify.example.com): the base of the
    # one-click unsubscribe links; unset: mail carries no List-Unsubscribe
    public_url: str | None = None
    # signs the unsubscribe links (HMAC-SHA256); unset: no links, /u/ answers 404
    unsubscribe_secret: SecretStr | None = None
    # replies that mean "no such recipient": basic codes (used when the reply carries no
    # enhanced code) and enhanced codes or classes (5.1.x); empty or off: none
    hard_bounce_codes: Annotated[tuple[str, ...], NoDecode] = ("550", "551", "553", "5.1.x")

    @field_validator("mail_from", mode="before")
    @classmethod
    def _parse_mail_from(cls, value: object) -> object:
        return parse_address(value) if isinstance(value, str) else value

    @field_validator("smtp_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        # checked here, not at the first connection: a space or a newline would otherwise
        # show up as an SMTP outage, blamed on the network
        if not _is_host(value):
            raise ValueError(
                "must be a host name like smtp.example.com (ASCII; IDNA form for international"
                " names) or an IP address like 192.0.2.1 or 2001:db8::1"
            )
        return value

    @field_validator("smtp_ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        # loaded now as the TLS connection would load it: a file that holds no certificate
        # would otherwise fail every connection later, looking like a TLS or port mistake
        if value is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=value)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(
                    f"{str(value)!r} cannot be loaded as CA certificates ({exc}): it must be a"
                    " readable PEM file with one or more -----BEGIN CERTIFICATE----- blocks"
                ) from None
        return value

    @field_validator("smtp_local_hostname")
    @classmethod
    def _check_local_hostname(cls, value: str | None) -> str | None:
        if value is not None and not _is_helo_name(value):
            raise ValueError(
                "must be a host name like notifier.example.com (ASCII; IDNA form for"
                " international names) or an address literal like [192.0.2.1]"
            )
        return value

    @field_validator("smtp_envelope_from", mode="before")
    @classmethod
    def _parse_envelope_from(cls, value: object) -> object:
        if isinstance(value, str):
            address = parse_address(value)
            if address.name is not None:
                raise ValueError("must be a bare address like bounces@example.com, without a name")
            return address
        return value

    @field_validator("allowed_senders", mode="before")
    @classmethod
    def _split_senders(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("allowed_senders")
    @classmethod
    def _check_senders(cls, value: list[str]) -> list[str]:
        # "@example.com" allows a whole domain; anything else is one address.
        return [
            "@" + parse_address("postmaster" + entry).domain
            if entry.startswith("@")
            else parse_address(entry).email.lower()
            for entry in value
        ]

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        entries = _split_commas(value)
        if isinstance(entries, list):
            return [parse_api_key(e) if isinstance(e, str) else e for e in entries]
        return entries

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, value: list[ApiKey]) -> list[ApiKey]:
        names = [key.name for key in value]
        if len(set(names)) != len(names):
            raise ValueError("two keys share a name")
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _check_keys_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # read now, as the service will: a mistake stops start-up naming its line
        if value is not None and {"allowed_senders", "mail_from"} <= info.data.keys():
            read_keys_file(
                value,
                allowed_senders=info.data["allowed_senders"],
                mail_from=info.data["mail_from"],
            )
        return value

    @field_validator("auth", mode="before")
    @classmethod
    def _lower_auth(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("auth")
    @classmethod
    def _auth_off_is_a_choice(cls, value: str, info: ValidationInfo) -> str:
        # An empty API_KEYS alone must never open the service: running without authentication
        # takes both settings, so a key list lost in deployment stops start-up instead.
        if not {"api_keys", "api_keys_file"} <= info.data.keys():
            return value  # API_KEYS or API_KEYS_FILE itself is wrong; that error says why
        keys, path = info.data["api_keys"], info.data["api_keys_file"]
        if value == "on" and not keys and (path is None or not _holds_keys(path, info)):
            raise ValueError(
                "API_KEYS is empty and API_KEYS_FILE is unset or holds no key, so anyone who"
                " reaches the service could send mail: set API_KEYS or API_KEYS_FILE (see the"
                " README, Callers), or"
                " set AUTH=off to run without authentication (local development only)"
            )
        if value == "off" and (keys or path is not None):
            given = "API_KEYS" if keys else "API_KEYS_FILE"
            raise ValueError(
                f"AUTH=off, but {given} is set: remove AUTH=off (or set AUTH=on) to require the"
                " keys, or unset API_KEYS and API_KEYS_FILE to run without authentication"
            )
        return value

    @field_validator("rate_limit", "auth_failure_limit", mode="before")
    @classmethod
    def _parse_rate_limit(cls, value: object) -> object:
        if isinstance(value, str):
            return RateLimit.parse(value) if value.strip().lower() not in {"", "off"} else None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        # one token for every scraper, never rotated per caller: it must not be guessable
        if value is not None and not _TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                f"must be at least {_MIN_TOKEN} characters of A-Z a-z 0-9 - . _ ~ + / (a random"
                " string, e.g. 32 hex digits), as a bearer token is sent"
            )
        return value

    @field_validator("console_secret")
    @classmethod
    def _check_console_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_rate_limit_storage(cls, value: str) -> str:
        if value != MEMORY and not _is_redis_url(value):
            raise ValueError(
                "must be memory:// (each process counts on its own) or redis://host:port/db"
                " (rediss:// for TLS; user and password allowed), shared by every replica"
            )
        return value

    @field_validator("rate_limit_key_prefix")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX.fullmatch(value):
            raise ValueError("must be 1 to 64 letters, digits or . _ : -")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and any(
            len(secret) < _MIN_TOKEN for secret in value.get_secret_value().split()
        ):
            raise ValueError(
                f"each secret must be at least {_MIN_TOKEN} characters (e.g. 32 hex digits);"
                " several are separated by spaces"
            )
        return value

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _split_allow_hosts(cls, value: object) -> object:
        entries = _split_commas(value)
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, str):
                    split_entry(entry)  # ValueError naming the entry
        return entries

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        """WEBHOOK_SECRET's secrets, the current one first."""
        secret = self.webhook_secret
        return tuple(secret.get_secret_value().split()) if secret is not None else ()

    @field_validator("attachment_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        types = _split_commas(value)
        if isinstance(types, list):
            for entry in types:
                if not isinstance(entry, str) or not _MEDIA_TYPE.fullmatch(entry):
                    raise ValueError(f"{entry!r} is not a media type like application/pdf")
            return [t.lower() for t in types if isinstance(t, str)]
        return types

    @field_validator("log_format", "delivery", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        parse_database_url(value)  # raises naming the accepted forms
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        # it goes into a header as it is: printable ASCII only (urlsplit drops CR and LF)
        printable = all(33 <= ord(ch) <= 126 for ch in value) and not {"<", ">"} & set(value)
        if (
            not printable
            or parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                "must be the service's address as recipients reach it, like"
                " https://notify.example.com (a path is allowed, no query)"
            )
        return value.rstrip("/")

    @field_validator("unsubscribe_secret")
    @classmethod
    def _check_unsubscribe_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # whoever knows it can unsubscribe anyone: it must not be guessable
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("hard_bounce_codes", mode="before")
    @classmethod
    def _parse_hard_bounce_codes(cls, value: object) -> object:
        if isinstance(value, str):
            entries = _split_commas(value)
            assert isinstance(entries, list)
            if [e.lower() for e in entries] == ["off"]:
                return ()
            for entry in entries:
                if not _BOUNCE_CODE.fullmatch(entry):
                    raise ValueError(
                        f"{entry!r} is neither a reply code like 550 nor an enhanced code like"
                        " 5.1.1 or class like 5.1.x"
                    )
            return tuple(e.lower() for e in entries)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def database_path(self) -> Path:
        """The SQLite file of DATABASE_URL (ValueError if it names a PostgreSQL database)."""
        return parse_database_url(self.database_url).sqlite_path

    @property
    def attempt_deadline(self) -> float:
        """The longest one delivery attempt may take: connect, TLS, AUTH, envelope and data."""
        return self.smtp_timeout * 6

    @property
    def lease_seconds(self) -> float:
        """How long a claimed notification stays ours before another worker may take it over;
        longer than any attempt can last, so two workers never send it at once."""
        return self.attempt_deadline * 2


def _holds_keys(path: Path, info: ValidationInfo) -> bool:
    keys = read_keys_file(
        path, allowed_senders=info.data["allowed_senders"], mail_from=info.data["mail_from"]
    )
    return bool(keys)


def _is_redis_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return False
    db = parts.path.removeprefix("/")
    return (
        parts.scheme in {"redis", "rediss"}
        and bool(parts.hostname)
        and (db == "" or db.isdecimal())
        and not parts.fragment
    )


def _is_host(value: str) -> bool:
    """A host name (labels of letters, digits, `-` and, as container names have them, `_`) or
    an IP address: what SMTP_HOST may be."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True
    labels = value.removesuffix(".").split(".")
    return len(value) <= 253 and all(_HOST_NAME_LABEL.fullmatch(label) for label in labels)


def _is_helo_name(value: str) -> bool:
    """A domain name or an address literal, as EHLO takes them (RFC 5321 4.1.1.1)."""
    if value.startswith("[") and value.endswith("]"):
        literal = value[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return False
        return True
    labels = value.removesuffix(".").split(".")
    return len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


class SettingsError(SystemExit):
    """Start-up stops here: a setting is wrong, and the message names it."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  {str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors(include_url=False)
        ]
        raise SettingsError("Invalid settings:\n" + "\n".join(lines)) from exc
