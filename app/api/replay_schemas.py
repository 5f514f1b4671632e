"""What goes over HTTP for a bulk replay: the filter, the request, the answer."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.api.schemas import Tag
from app.rendering.catalog import TEMPLATE_NAME


class ReplayFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str | None = Field(default=None, pattern=TEMPLATE_NAME)
    tag: Tag | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    error_contains: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        # no NUL: no error holds one, and PostgreSQL cannot compare with it
        pattern=r"^[^\x00]*$",
        description="A part of `last_error`, matched as it is written (case counts).",
        examples=["554"],
    )


class ReplayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "filter": {"template": "welcome", "error_contains": "554"},
                    "dry_run": True,
                    "limit": 500,
                    "cursor": None,
                }
            ]
        },
    )

    filter: ReplayFilter = Field(default_factory=ReplayFilter)
    dry_run: bool = False
    limit: int = Field(default=500, ge=1, le=1000)
    cursor: str | None = Field(
        default=None, max_length=1000, description="`next_cursor` of the previous call."
    )


class ReplayResult(BaseModel):
    count: int = Field(description="How many were queued again (dry run: would be).")
    ids: list[str]
    next_cursor: str | None = Field(
        description="More failed notifications may match: pass it as `cursor` to go on."
    )
    dry_run: bool
