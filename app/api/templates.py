"""The HTTP API for templates: list them, preview one without sending."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from app.api.acceptance import missing_message
from app.api.caller_limits import may_use_template
from app.api.callers import Scope
from app.api.deps import Authenticated, CallerDep, Services, ServicesDep, authorized, charge
from app.api.direct import served_by
from app.api.json_body import json_body
from app.api.limits import check_context
from app.api.refusals import ADMISSION, BODY, SCOPED
from app.api.schemas import (
    LintReport,
    LintWarningView,
    Preview,
    PreviewRequest,
    TemplateView,
)
from app.errors import InvalidRequest, TemplateBroken, TemplateNotFound
from app.ops.logs import event
from app.rendering.catalog import TEMPLATE_NAME
from app.rendering.lint import SAMPLE_FILE, LintWarning, lint_html, placeholders, sample_context

log = logging.getLogger("app.templates")

router = APIRouter(
    prefix="/v1/templates", tags=["templates"], dependencies=[Authenticated], responses=ADMISSION
)

_NAME = re.compile(TEMPLATE_NAME)


@router.get("", response_model=list[TemplateView])
async def list_templates(services: ServicesDep, caller: CallerDep) -> list[TemplateView]:
    """The templates the caller's key may send (all of them, for a key without `templates`)."""
    return [
        TemplateView(name=t.name, description=t.description, variables=list(t.variables))
        for t in services.catalog.all()
        if may_use_template(caller, t.name)
    ]


async def preview_template(
    name: Annotated[str, Path(pattern=TEMPLATE_NAME)],
    body: PreviewRequest,
    services: ServicesDep,
) -> Preview:
    """Render subject, HTML and text exactly as they would be sent; nothing is sent. A context
    the template cannot render (say `{{ user.name }}` with a string user) is a 422 with the
    template's message: the same context in a notification would fail it."""
    # FastAPI documents this signature; `_preview_directly` serves it (see app.api.direct).
    catalog = services.catalog
    try:
        missing = catalog.missing_variables(name, body.context)
    except TemplateNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if missing:
        raise InvalidRequest(("body", "context"), missing_message(name, missing))
    # the limits a notification's context is held to: a preview renders it the same way, and
    # an unbounded one would let one request build a response of any size
    check_context(body.context, services.settings)
    try:
        rendered = catalog.render(name, body.context)
    except TemplateBroken as exc:
        raise InvalidRequest(("body", "context"), str(exc)) from exc
    except Exception as exc:  # a value the template chokes on, say `{{ n + 1 }}` with a string
        event(log, "preview.failed", level=logging.INFO, template=name, error=type(exc).__name__)
        raise InvalidRequest(
            ("body", "context"), f"template {name!r} failed to render: {exc}"
        ) from exc
    return Preview(subject=rendered.subject, html=rendered.html, text=rendered.text)


async def _preview_directly(http: Request) -> Response:
    """`preview_template`'s arguments read by hand, so that its body is read like every other
    (app.api.json_body); the caller was authenticated before (app.api.middleware.Admit), and is
    charged before the body is parsed."""
    services: Services = http.app.state.services
    caller = authorized(http, Scope.PREVIEW)
    name: str = http.path_params["name"]
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            ("path", "name"),
            f"String should match pattern '{TEMPLATE_NAME}'",
            "string_pattern_mismatch",
        )
    await charge(services, caller, 1)
    if not may_use_template(caller, name):  # as sending it would be: a 422 naming the template
        raise InvalidRequest(
            ("path", "name"), f"the key of {caller.name!r} may not use template {name!r}"
        )
    preview = await preview_template(name, await json_body(http, PreviewRequest), services)
    return Response(preview.model_dump_json(), media_type="application/json")


router.add_api_route(
    "/{name}/preview",
    preview_template,
    methods=["POST"],
    response_model=Preview,
    responses={**SCOPED, **BODY, 404: {"description": "No template of that name."}},
    route_class_override=served_by(_preview_directly),
)


@router.get(
    "/{name}/lint",
    response_model=LintReport,
    responses={**SCOPED, 404: {"description": "No template of that name."}},
)
async def lint_template(
    name: Annotated[str, Path(pattern=TEMPLATE_NAME)],
    services: ServicesDep,
    http: Request,
) -> LintReport:
    """Warnings for the template rendered with its sample.json (else each variable as
    `[name]`): HTML over 102 KB, `<img>` without alt, http:// links, links without text, no
    text part. Nothing is sent."""
    authorized(http, Scope.PREVIEW)  # the router's dependency charged the rate limit already
    catalog = services.catalog
    try:
        info = catalog.get(name)
    except TemplateNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    warnings: list[LintWarning] = []
    try:
        context = sample_context(services.settings.templates_dir / name)
    except (ValueError, OSError) as exc:
        warnings.append(LintWarning("bad_sample", f"{SAMPLE_FILE} cannot be read: {exc}"))
        context = None
    if context is None:
        context = placeholders(info.variables)
        if info.variables:
            needed = ", ".join(info.variables)
            warnings.append(
                LintWarning("no_sample", f"no {SAMPLE_FILE}; rendered with [name] for: {needed}")
            )
    try:
        rendered = catalog.render(name, context)
    except Exception as exc:  # the sample does not suit the template: say so, never a 500
        warnings.append(LintWarning("render_failed", f"{type(exc).__name__}: {exc}"[:300]))
    else:
        warnings += lint_html(rendered.html, has_text_part=info.has_text)
    return LintReport(
        template=name,
        warnings=[LintWarningView(code=w.code, message=w.message) for w in warnings],
        sample=(services.settings.templates_dir / name / SAMPLE_FILE).is_file(),
    )
