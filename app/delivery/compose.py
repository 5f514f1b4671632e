"""A stored notification as the message bytes it is sent as: render its template, then build
the MIME message. Delivery sends what this builds; the API's message download shows it for a
notification no attempt has sent yet."""

from __future__ import annotations

from app.addresses import Address
from app.delivery.mailer import OutgoingMail, build_message
from app.rendering.catalog import RenderedMail, TemplateCatalog
from app.store.records import Notification


def compose(
    notification: Notification, *, catalog: TemplateCatalog, default_sender: Address
) -> tuple[RenderedMail, OutgoingMail]:
    """Raises TemplateNotFound or TemplateBroken when the template cannot render it, and
    whatever building fails with for a message that cannot be built."""
    request = notification.request
    rendered = catalog.render(request.template, request.context, subject=request.subject)
    mail = build_message(
        request,
        rendered,
        sender=request.sender or default_sender,
        message_id=notification.message_id,
    )
    return rendered, mail
