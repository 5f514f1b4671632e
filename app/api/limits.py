"""Size limits on what a request may carry, each refused with a message that names the field
and the setting: context size and depth (422), attachment sizes (413) and types (422)."""

from __future__ import annotations

import json
from typing import Any

from app.api.schemas import Attachment
from app.errors import InvalidRequest
from app.settings import Settings


def _depth(value: Any, limit: int) -> int:
    """How deep `value` nests, counted only up to `limit` + 1. A loop, not recursion: a batch
    item's context (read by Python's JSON parser) can nest deeper than the stack allows."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            pending.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def check_context(context: dict[str, Any], settings: Settings) -> None:
    size = len(json.dumps(context, separators=(",", ":")).encode())
    if size > settings.max_context_bytes:
        raise InvalidRequest(
            ("body", "context"),
            f"context is {size} bytes as JSON; MAX_CONTEXT_BYTES allows"
            f" {settings.max_context_bytes}",
        )
    if _depth(context, settings.max_context_depth) > settings.max_context_depth:
        raise InvalidRequest(
            ("body", "context"),
            f"context nests more than {settings.max_context_depth} levels deep;"
            f" MAX_CONTEXT_DEPTH allows {settings.max_context_depth}",
        )


def check_attachments(attachments: list[Attachment], settings: Settings) -> None:
    total = 0
    for index, attachment in enumerate(attachments):
        loc = ("body", "attachments", index)
        if attachment.content_type not in settings.attachment_types:
            raise InvalidRequest(
                (*loc, "content_type"),
                f"{attachment.content_type} is not allowed; ATTACHMENT_TYPES lists"
                f" {', '.join(settings.attachment_types)}",
            )
        if attachment.size > settings.max_attachment_bytes:
            raise InvalidRequest(
                (*loc, "content"),
                f"{attachment.filename} is {attachment.size} bytes; MAX_ATTACHMENT_BYTES allows"
                f" {settings.max_attachment_bytes}",
                status=413,
            )
        total += attachment.size
    if total > settings.max_attachments_bytes:
        raise InvalidRequest(
            ("body", "attachments"),
            f"attachments total {total} bytes; MAX_ATTACHMENTS_BYTES allows"
            f" {settings.max_attachments_bytes}",
            status=413,
        )
    ids = [a.content_id for a in attachments if a.content_id]
    if len(ids) != len(set(ids)):
        raise InvalidRequest(("body", "attachments"), "two attachments share a content_id")
