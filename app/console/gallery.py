"""The templates gallery: every template the signed-in key may use, rendered with its sample at a
desktop and a phone's width, with its subject, text part and warnings; and the route its live
editor posts a context to, which previews exactly as `POST /v1/templates/{name}/preview` does
(app.api.preview) and lints as `GET /v1/templates/{name}/lint` does (app.rendering.lint)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.responses import HTMLResponse, Response

from app.api.caller_limits import may_use_template
from app.api.callers import Caller, Scope
from app.api.deps import Services, ServicesDep, charge, check_scope, get_services
from app.api.json_body import json_body
from app.api.preview import check_may_preview, render_preview
from app.api.schemas import LintWarningView, Preview, PreviewRequest
from app.console.pages import (
    HEADERS,
    SIGNED_OUT,
    ConsoleCaller,
    CsrfChecked,
    SignInNeeded,
    current_caller,
)
from app.console.pages import render as render_page
from app.rendering.catalog import TEMPLATE_NAME
from app.rendering.lint import lint_html
from app.rendering.sample import Sampled, render_sample

router = APIRouter(prefix="/console", include_in_schema=False)

# The widths the previews are shown at: a desktop reading pane, and a common phone's screen.
DESKTOP_PX = 720
MOBILE_PX = 375


@dataclass(frozen=True)
class Card:
    """One template as the gallery shows it."""

    sampled: Sampled
    context_json: str  # the editor's starting text

    @property
    def name(self) -> str:
        return self.sampled.template.name


class Rendered(Preview):
    """What the editor gets back: the preview, and the warnings for that rendering."""

    warnings: list[LintWarningView]


@router.get("/templates", response_class=HTMLResponse)
async def gallery(request: Request, caller: ConsoleCaller, services: ServicesDep) -> Response:
    cards = [
        _card(services, template.name)
        for template in services.catalog.all()
        if may_use_template(caller, template.name)
    ]
    return render_page(
        request,
        "templates.html",
        caller=caller,
        cards=cards,
        may_edit=caller.may(Scope.PREVIEW),
        desktop_px=DESKTOP_PX,
        mobile_px=MOBILE_PX,
    )


async def _editor_caller(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Caller:
    """The signed-in caller; for a script's request, a 401 it can show rather than a redirect
    to the sign-in page that fetch() would follow."""
    try:
        return await current_caller(request, services)
    except SignInNeeded:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, SIGNED_OUT) from None


@router.post("/templates/{name}/render", dependencies=[CsrfChecked], response_model=Rendered)
async def render(
    name: Annotated[str, Path(pattern=TEMPLATE_NAME)],
    request: Request,
    caller: Annotated[Caller, Depends(_editor_caller)],
    services: ServicesDep,
) -> Response:
    """The editor's context (`{"context": {...}}`, as the API's preview takes it) rendered and
    linted. Refused as the API's preview refuses it: 403 without the `preview` scope, 422 for a
    template the key may not use, a missing variable, a context over the limits or one the
    template fails on, 404 for no such template; charged one unit of the rate limit."""
    check_scope(caller, Scope.PREVIEW)
    await charge(services, caller, 1)  # before the body is read, as the API's preview does
    check_may_preview(caller, name)
    body = await json_body(request, PreviewRequest)
    mail = render_preview(
        catalog=services.catalog, settings=services.settings, name=name, context=body.context
    )
    warnings = lint_html(mail.html, has_text_part=services.catalog.get(name).has_text)
    answer = Rendered(
        subject=mail.subject,
        html=mail.html,
        text=mail.text,
        warnings=[LintWarningView(code=w.code, message=w.message) for w in warnings],
    )
    return Response(answer.model_dump_json(), media_type="application/json", headers=HEADERS)


def _card(services: Services, name: str) -> Card:
    sampled = render_sample(
        services.catalog, templates_dir=services.settings.templates_dir, name=name
    )
    context_json = json.dumps(sampled.context, indent=2, ensure_ascii=False)
    return Card(sampled=sampled, context_json=context_json)
