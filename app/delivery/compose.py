"""A stored notification as the message bytes it is sent as: render its template, then build
the MIME message. Delivery sends what this builds; the API's message download shows it for a
notification no attempt has sent yet."""

from __future__ import annotations

import logging

from app.addresses import Address
from app.delivery.mailer import OutgoingMail, build_message
from app.ops.logs import event
from app.rendering.catalog import RenderedMail, TemplateCatalog
from app.settings import Settings
from app.store.records import Notification, envelope_recipients
from app.unsubscribe import Links, Subscription


def compose(
    notification: Notification,
    *,
    catalog: TemplateCatalog,
    default_sender: Address,
    links: Links | None = None,
) -> tuple[RenderedMail, OutgoingMail]:
    """Raises TemplateNotFound or TemplateBroken when the template cannot render it, and
    whatever building fails with for a message that cannot be built. With `links` (PUBLIC_URL
    and UNSUBSCRIBE_SECRET set), see `unsubscribe_link`."""
    request = notification.request
    rendered = catalog.render(request.template, request.context, subject=request.subject)
    mail = build_message(
        request,
        rendered,
        sender=request.sender or default_sender,
        message_id=notification.message_id,
        unsubscribe=unsubscribe_link(notification, links),
    )
    return rendered, mail


def unsubscribe_link(notification: Notification, links: Links | None) -> str | None:
    """The one-click unsubscribe link of a notification with a category, when it goes to one
    recipient: the link unsubscribes one address, and one message goes to every recipient, so
    with several any of them could unsubscribe the one the link names."""
    category = notification.request.category
    recipients = envelope_recipients(notification.request)
    if links is None or category is None or len(recipients) != 1:
        return None
    return links.link(Subscription(notification.caller, category, recipients[0]))


def unsubscribe_links(settings: Settings) -> Links | None:
    """How to make unsubscribe links; None unless PUBLIC_URL and UNSUBSCRIBE_SECRET are set."""
    if settings.public_url is None or settings.unsubscribe_secret is None:
        return None
    secret = settings.unsubscribe_secret.get_secret_value().encode()
    return Links(public_url=settings.public_url, secret=secret)


def log_if_no_unsubscribe_links(settings: Settings, logger: logging.Logger) -> None:
    """At start-up, say that mail goes without List-Unsubscribe and what is missing. Every
    process logs it, a worker too: a worker builds the mail, so one started without the two
    settings sends newsletters without a link while the APIs beside it have them."""
    missing = [
        name
        for name, value in (
            ("PUBLIC_URL", settings.public_url),
            ("UNSUBSCRIBE_SECRET", settings.unsubscribe_secret),
        )
        if value is None
    ]
    if missing:
        event(
            logger,
            "unsubscribe.disabled",
            missing=",".join(missing),
            hint="mail with a category carries no List-Unsubscribe link, and /u/ answers 404",
        )
