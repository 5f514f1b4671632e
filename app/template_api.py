"""The HTTP API for templates: list them, preview one without sending."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from app.acceptance import missing_message
from app.deps import Authenticated, ServicesDep
from app.errors import InvalidRequest, TemplateNotFound
from app.rendering import TEMPLATE_NAME
from app.schemas import Preview, PreviewRequest, TemplateView

router = APIRouter(prefix="/v1/templates", tags=["templates"], dependencies=[Authenticated])


@router.get("", response_model=list[TemplateView])
async def list_templates(services: ServicesDep) -> list[TemplateView]:
    return [
        TemplateView(name=t.name, description=t.description, variables=list(t.variables))
        for t in services.catalog.all()
    ]


@router.post(
    "/{name}/preview",
    response_model=Preview,
    responses={404: {"description": "No template of that name."}},
)
async def preview_template(
    name: Annotated[str, Path(pattern=TEMPLATE_NAME)],
    body: PreviewRequest,
    services: ServicesDep,
) -> Preview:
    """Render subject, HTML and text exactly as they would be sent; nothing is sent."""
    catalog = services.catalog
    try:
        missing = catalog.missing_variables(name, body.context)
    except TemplateNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if missing:
        raise InvalidRequest(("body", "context"), missing_message(name, missing))
    rendered = catalog.render(name, body.context)
    return Preview(subject=rendered.subject, html=rendered.html, text=rendered.text)
