"""The transactional emails of the web app: "confirm your subscription" and "you are already subscribed"."""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid, parseaddr

import jinja2

from digest.config import Settings
from digest.errors import RenderError
from digest.links import MAX_AGE, LinkBuilder, PersonalLinks, Scope
from digest.message import build_message, list_id_for
from digest.models import OutgoingMessage, RenderedEmail
from digest.web.templating import html_env, text_env

# A transactional email carries no List-Unsubscribe: there is nothing to unsubscribe from yet.
_NO_LIST_LINKS = PersonalLinks(preferences="", unsubscribe="", unsubscribe_mailto="", archive="")


def confirmation_message(settings: Settings, links: LinkBuilder, email: str, now: datetime, *,
                         confirm_url: str | None = None) -> OutgoingMessage:
    """The double opt-in email: one signed link to /confirm/<token> (``confirm_url``, or one for the
    bare address), valid for MAX_AGE[CONFIRM]."""
    title = settings.site.title
    context = {"kind": "confirm", "site_title": title, "email": email,
               "confirm_url": confirm_url or links.confirm(email),
               "valid_days": (MAX_AGE[Scope.CONFIRM] or 0) // 86400, "home_url": links.base_url + "/",
               "postal": settings.site.postal_address}
    return _message(settings, email, f"Confirm your subscription to {title}", context, now)


def already_subscribed_message(settings: Settings, links: LinkBuilder, email: str,
                               now: datetime) -> OutgoingMessage:
    """Sent instead of a confirmation when the address is already confirmed: their personal links."""
    personal = links.for_subscriber(email)
    title = settings.site.title
    context: dict[str, object] = {
        "kind": "already", "site_title": title, "email": email, "preferences_url": personal.preferences,
        "unsubscribe_url": personal.unsubscribe, "home_url": links.base_url + "/",
        "postal": settings.site.postal_address}
    return _message(settings, email, f"Your {title} subscription", context, now)


def _message(settings: Settings, email: str, subject: str, context: dict[str, object],
             now: datetime) -> OutgoingMessage:
    context = {**context, "subject": subject}
    try:
        text = text_env().get_template("confirm_email.txt").render(context)
        html = html_env().get_template("confirm_email.html").render(context)
    except jinja2.TemplateError as err:
        raise RenderError(f"confirmation email template failed: {err}") from err
    sender = settings.site.sender
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message_id = make_msgid(idstring="confirm", domain=domain)
    data = build_message(RenderedEmail(subject, html, text), sender=sender, recipient=email,
                         message_id=message_id, date=now, list_id=list_id_for(settings), links=_NO_LIST_LINKS)
    return OutgoingMessage(sender=parseaddr(sender)[1] or sender, recipient=email, message_id=message_id,
                           data=data)
