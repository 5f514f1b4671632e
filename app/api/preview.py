"""A template previewed with a caller's context: the checks and the render that the API's
`POST /v1/templates/{name}/preview` and the console's live editor share, so that both hold a
context to the limits a notification's is held to and refuse the same contexts the same way."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, status

from app.api.acceptance import missing_message
from app.api.caller_limits import may_use_template
from app.api.callers import Caller
from app.api.limits import check_context
from app.errors import InvalidRequest, TemplateBroken, TemplateNotFound
from app.ops.logs import event
from app.rendering.catalog import RenderedMail, TemplateCatalog
from app.settings import Settings

log = logging.getLogger("app.templates")


def check_may_preview(caller: Caller, name: str) -> None:
    """As sending it would be: a 422 naming the template a key may not use."""
    if not may_use_template(caller, name):
        raise InvalidRequest(
            ("path", "name"), f"the key of {caller.name!r} may not use template {name!r}"
        )


def render_preview(
    *, catalog: TemplateCatalog, settings: Settings, name: str, context: dict[str, Any]
) -> RenderedMail:
    """Subject, HTML and text exactly as they would be sent. 404 for no such template; 422
    naming `context` for a missing variable, a context over the limits, or one the template
    cannot render (say `{{ user.name }}` with a string user): the same context in a
    notification would fail it."""
    try:
        missing = catalog.missing_variables(name, context)
    except TemplateNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if missing:
        raise InvalidRequest(("body", "context"), missing_message(name, missing))
    # the limits a notification's context is held to: a preview renders it the same way, and
    # an unbounded one would let one request build a response of any size
    check_context(context, settings)
    try:
        return catalog.render(name, context)
    except TemplateBroken as exc:
        raise InvalidRequest(("body", "context"), str(exc)) from exc
    except Exception as exc:  # a value the template chokes on, say `{{ n + 1 }}` with a string
        event(log, "preview.failed", level=logging.INFO, template=name, error=type(exc).__name__)
        raise InvalidRequest(
            ("body", "context"), f"template {name!r} failed to render: {exc}"
        ) from exc
