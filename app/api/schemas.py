"""What goes over HTTP: request and response bodies, with the examples the OpenAPI docs show."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from app.addresses import Address
from app.rendering.catalog import TEMPLATE_NAME
from app.text_rules import ONE_LINE, TEXT, Context, check_encodable, check_one_line
from app.webhooks.targets import MAX_URL_CHARS, RefusedTarget, parse_target

# Patterns given to pydantic (`pattern=`) run in its Rust regex engine and go into the OpenAPI
# schema (ECMAScript): in both, `$` matches only at the very end. Python's `$` also matches
# before a final "\n", so patterns matched in Python use fullmatch and no anchors.
_HEADER_NAME = re.compile(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,62}")

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.:/-]+$"), TEXT]
_METADATA_KEY = re.compile(r"[\w.:/-]{1,64}")


def _metadata_key(value: str, info: ValidationInfo) -> str:
    # Checked here rather than with StringConstraints: a row stored before keys were bounded
    # must stay readable (`trusted`), and only new requests are held to the rule.
    if info.context and info.context.get("trusted"):
        return value
    if not _METADATA_KEY.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(
            f"metadata key {shown!r} ({len(value)} characters) must be 1 to 64 letters, digits"
            " or _ . : / - (like a tag)"
        )
    return value


MetadataKey = Annotated[
    str,
    AfterValidator(_metadata_key),
    WithJsonSchema({"type": "string", "pattern": r"^[\w.:/-]{1,64}$"}),
]
MetadataValue = Annotated[str, StringConstraints(max_length=500), TEXT]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=500), ONE_LINE]
# ASCII only: it is signed into unsubscribe links and compared byte for byte
Category = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"  # every recipient is on the suppression list: nothing was sent


WELCOME_EXAMPLE: dict[str, Any] = {
    "template": "welcome",
    "to": ["Ada Lovelace <ada@example.com>"],
    "cc": [{"email": "charles@example.com", "name": "Charles Babbage"}],
    "bcc": ["audit@example.com"],
    "context": {"name": "Ada", "action_url": "https://example.com/start"},
    "headers": {"X-Campaign": "onboarding"},
    "tags": ["onboarding"],
    "metadata": {"user_id": "42"},
}


_CONTENT_ID = r"^[A-Za-z0-9._-]{1,64}(@[A-Za-z0-9.-]{1,64})?$"
# ASCII only: Rust's \w would let any letter of any script into a Content-Type header
MEDIA_TYPE = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*/[A-Za-z0-9][A-Za-z0-9_.+-]*$"
_PATH_SEPARATORS = re.compile(r"[\\/]")
# The shape of an RFC 3339 date-time (seconds optional, as pydantic reads it); pydantic checks
# the values and requires the timezone (AwareDatetime).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


class Attachment(BaseModel):
    """A file sent with the mail; `inline` ones are images the HTML shows as `cid:<content_id>`."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255, examples=["invoice-42.pdf"])
    content_type: str = Field(
        max_length=127,
        pattern=MEDIA_TYPE,
        examples=["application/pdf"],
    )
    content: str = Field(description="The file, base64-encoded.", examples=["JVBERi0xLjQK"])
    inline: bool = False
    content_id: str | None = Field(default=None, pattern=_CONTENT_ID, examples=["logo"])

    @field_validator("filename")
    @classmethod
    def _safe_filename(cls, value: str) -> str:
        check_encodable(value, "the file name")
        # a name, never a path; control characters (CR, LF, NUL) dropped
        name = _PATH_SEPARATORS.split(value)[-1]
        name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".")
        if not name:
            raise ValueError(f"{value!r} leaves no usable file name")
        return name

    @field_validator("content_type")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        compact = "".join(value.split())
        try:
            base64.b64decode(compact, validate=True)
        except binascii.Error:
            raise ValueError("content is not valid base64") from None
        return compact

    @model_validator(mode="after")
    def _inline_needs_id(self) -> Attachment:
        if self.inline and not self.content_id:
            raise ValueError("an inline attachment needs a content_id (used as cid: in HTML)")
        return self

    @property
    def size(self) -> int:
        """Decoded size in bytes, without decoding."""
        return len(self.content) * 3 // 4 - self.content[-2:].count("=")


class NotificationRequest(BaseModel):
    """A mail to send: which template, to whom, and the values the template needs."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [WELCOME_EXAMPLE]},
    )

    template: str = Field(pattern=TEMPLATE_NAME, description="A template in TEMPLATES_DIR.")
    to: list[Address] = Field(min_length=1)
    cc: list[Address] = Field(default_factory=list)
    bcc: list[Address] = Field(
        default_factory=list, description="Receive the mail; never appear in any header."
    )
    reply_to: Address | None = None
    sender: Address | None = Field(
        default=None, alias="from", description="Defaults to MAIL_FROM; must be in ALLOWED_SENDERS."
    )
    subject: Subject | None = Field(default=None, description="Overrides the template's subject.")
    context: Context = Field(default_factory=dict, description="The template's variables.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Custom headers; names must start with X-."
    )
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        max_length=50,
        description="Up to 50 pairs: keys of 1 to 64 letters, digits or _ . : / -, values of"
        " up to 500 characters (so at most ~28 KB in all).",
    )
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    category: Category | None = Field(
        default=None,
        description="What kind of mail this is (e.g. newsletter): recipients who unsubscribed"
        " from it are skipped, and the mail carries a one-click List-Unsubscribe link.",
        examples=["newsletter"],
    )
    send_at: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 with a timezone. In the future (at most MAX_SCHEDULE_AHEAD"
        " seconds): sent then; in the past: sent now.",
        examples=["2030-01-01T09:00:00+01:00"],
    )
    callback_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="An https:// URL told of each state change by a signed POST (see the"
        " README, Webhooks); defaults to the key's. Its host must resolve to public addresses.",
        examples=["https://example.com/hooks/notifier"],
    )

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        # the syntax only; where it leads is checked at accept time (app.api.callbacks)
        if value is not None and not (info.context and info.context.get("trusted")):
            try:
                parse_target(value)
            except RefusedTarget as exc:
                raise ValueError(f"callback_url {exc}") from None
        return value

    @field_validator("send_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: object, info: ValidationInfo) -> object:
        # pydantic would read a number, or a string of digits, as Unix time, in seconds or,
        # past 2e10, in milliseconds: 20000000000 meant as seconds would go out at once
        if isinstance(value, str) and _RFC3339.fullmatch(value):
            return value
        if isinstance(value, datetime) or value is None:
            return value
        raise ValueError(
            "send_at must be an RFC 3339 date and time with a timezone, as a string, like"
            " 2030-01-01T09:00:00+01:00 or 2030-01-01T08:00:00Z; numbers are not taken"
        )

    @field_validator("send_at")
    @classmethod
    def _representable_in_utc(cls, value: datetime | None) -> datetime | None:
        # 9999-12-31T23:59:59-14:00 is a valid datetime whose UTC moment lies in year 10000:
        # nothing that shows or compares it could work with it
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError(
                    f"{value.isoformat()} is outside the years 1 to 9999 in UTC"
                ) from None
        return value

    @field_validator("headers")
    @classmethod
    def _custom_headers(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.context and info.context.get("trusted"):
            return value  # read back from our own store: checked when it was accepted
        seen: dict[str, str] = {}
        for name, header_value in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} must start with X- and use A-Z, 0-9, -")
            if (first := seen.setdefault(name.lower(), name)) != name:
                raise ValueError(
                    f"headers {first} and {name} are the same header (case does not count)"
                )
            check_one_line(header_value, f"header {name}")
            if len(header_value) > 900:
                raise ValueError(f"header {name} is longer than 900 characters")
        return value

    @property
    def recipients(self) -> list[Address]:
        return [*self.to, *self.cc, *self.bcc]


class SuppressedRecipient(BaseModel):
    email: str = Field(description="The address as the SMTP server would be given it.")
    reason: str = Field(examples=["hard_bounce", "unsubscribe", "complaint", "manual"])


class Accepted(BaseModel):
    id: str
    status: Status
    created_at: datetime
    suppressed: list[SuppressedRecipient] = Field(
        default=[],
        description="Recipients on the suppression list now: unless removed from it before"
        " the mail goes out, they are skipped.",
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"notifications": [WELCOME_EXAMPLE, WELCOME_EXAMPLE]}]},
    )

    # Any: an item that is not even an object ("x", null) is refused by index like any other
    notifications: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/NotificationRequest"},
                "minItems": 1,
            }
        ),
    ] = Field(
        min_length=1,
        description="Each item is a notification request, validated on its own.",
    )


class BatchItem(BaseModel):
    index: int
    id: str | None = None
    status: Status | None = None
    error: list[dict[str, Any]] | None = Field(
        default=None, description="Why this item was refused, in the shape of a 422's detail."
    )


class BatchAccepted(BaseModel):
    accepted: int
    refused: int
    items: list[BatchItem]


class LintWarningView(BaseModel):
    code: str = Field(
        examples=["html_too_big", "img_without_alt", "http_link", "empty_link", "no_text_part"]
    )
    message: str


class LintReport(BaseModel):
    template: str
    warnings: list[LintWarningView]
    sample: bool = Field(
        description="Rendered with the template's sample.json; false: with each variable"
        " set to its own name, `[name]` (a `no_sample` warning lists them)."
    )


class AttemptRecipient(BaseModel):
    email: str = Field(description="The address as the SMTP server was given it.")
    outcome: str = Field(examples=["delivered", "deferred", "refused", "failed", "suppressed"])
    code: int | None = Field(default=None, description="The SMTP reply code, if it refused.")
    message: str | None = Field(
        default=None,
        description="The SMTP reply text, if it refused; the reason, if it was suppressed.",
    )


class Attempt(BaseModel):
    at: datetime
    outcome: str = Field(examples=["sent", "deferred", "failed"])
    smtp_code: int | None = None
    detail: str | None = Field(
        default=None, description="The server's reply on success, else what went wrong."
    )
    duration_ms: float
    recipients: list[AttemptRecipient] = Field(
        default=[],
        description="What this attempt did to each recipient it tried (empty when it reached"
        " none, and for attempts recorded by versions before it was kept).",
    )


class Recipients(BaseModel):
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]


class RefusedRecipient(BaseModel):
    email: str
    code: int
    message: str


class RecipientOutcome(StrEnum):
    DELIVERED = "delivered"  # the SMTP server took the mail for this recipient
    REFUSED = "refused"  # refused for good (5xx); never tried again
    PENDING = "pending"  # not yet delivered; tried again while the notification waits
    FAILED = "failed"  # not delivered, and no more attempts: the notification failed
    CANCELLED = "cancelled"  # not delivered: the notification was cancelled
    SUPPRESSED = "suppressed"  # skipped: on the suppression list (see `reason`)


class RecipientStatus(BaseModel):
    email: str = Field(description="The address as the SMTP server was given it.")
    status: RecipientOutcome
    code: int | None = Field(default=None, description="The SMTP reply code of a refusal.")
    message: str | None = Field(default=None, description="The SMTP reply text of a refusal.")
    reason: str | None = Field(
        default=None, description="Why a suppressed recipient is on the suppression list."
    )


class NotificationView(BaseModel):
    id: str
    status: Status
    template: str
    caller: str = Field(description="The name of the API key that sent it, or 'anonymous'.")
    sender: Address | None = Field(serialization_alias="from")
    recipients: Recipients
    reply_to: Address | None
    subject: str | None = Field(description="Set once the mail is rendered.")
    attempts: list[Attempt]
    refused_recipients: list[RefusedRecipient] = Field(
        description="Recipients the SMTP server refused for good; the others got the mail."
    )
    recipients_status: list[RecipientStatus] = Field(
        description="Each envelope recipient (to, cc and bcc, once each) and what became of it:"
        " `delivered`, `refused` (with the server's code and message), `pending` (tried again"
        " while the notification waits), `suppressed` (skipped: on the suppression list, with the"
        " `reason`), or, once it is finished, `failed` or `cancelled`."
    )
    last_error: str | None = Field(
        description="Why the last attempt did not deliver to everyone: a temporary or permanent"
        " failure, or the refused recipients of a sent notification; null after a clean"
        " success (the server's reply is in the attempt's `detail`)."
    )
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    message_id: str | None
    tags: list[str]
    metadata: dict[str, str]


class NotificationPage(BaseModel):
    items: list[NotificationView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class TemplateView(BaseModel):
    name: str
    description: str
    variables: list[str] = Field(description="Context variables the template needs.")


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"context": {"name": "Ada", "action_url": "https://example.com/start"}}]
        },
    )

    context: Context = Field(default_factory=dict)


class Preview(BaseModel):
    subject: str
    html: str
    text: str
