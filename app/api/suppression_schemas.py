"""What goes over HTTP for the suppression list: the body of a PUT, an entry, a page."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import Category


class Reason(StrEnum):
    HARD_BOUNCE = "hard_bounce"  # the server said the address does not exist (added by itself)
    UNSUBSCRIBE = "unsubscribe"  # the recipient asked (one-click link)
    COMPLAINT = "complaint"  # the recipient marked mail as spam (told by your feedback loop)
    MANUAL = "manual"


class SuppressionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "manual", "category": None}]},
    )

    reason: Reason = Reason.MANUAL
    category: Category | None = Field(
        default=None, description="Only mail of this category; null: every category."
    )


class SuppressionView(BaseModel):
    address: str = Field(description="In lower case: suppressions match without regard to case.")
    caller: str
    category: str | None = Field(description="null: every category.")
    reason: Reason
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
