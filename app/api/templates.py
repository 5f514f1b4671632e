"""The HTTP API for templates: list them, preview one without sending."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from app.api.caller_limits import may_use_template
from app.api.callers import Scope
from app.api.deps import Authenticated, CallerDep, Services, ServicesDep, authorized, charge
from app.api.direct import served_by
from app.api.json_body import json_body
from app.api.preview import check_may_preview, render_preview
from app.api.refusals import ADMISSION, BODY, SCOPED
from app.api.schemas import (
    LintReport,
    LintWarningView,
    Preview,
    PreviewRequest,
    TemplateView,
)
from app.errors import InvalidRequest, TemplateNotFound
from app.rendering.catalog import TEMPLATE_NAME
from app.rendering.sample import render_sample

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
    rendered = render_preview(
        catalog=services.catalog, settings=services.settings, name=name, context=body.context
    )
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
    check_may_preview(caller, name)
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
    try:
        sampled = render_sample(
            services.catalog, templates_dir=services.settings.templates_dir, name=name
        )
    except TemplateNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return LintReport(
        template=name,
        warnings=[LintWarningView(code=w.code, message=w.message) for w in sampled.warnings],
        sample=sampled.sample,
    )
