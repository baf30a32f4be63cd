"""Composing one message: an issue and its reader -> the outgoing message (personal links, subject,
rendered bodies, MIME bytes, DKIM signature).

Owns nothing but the settings and a renderer; it reads no database and sends nothing, so the send engine,
the render process, ``digest preview`` and the benchmarks all build their messages through it. The
renderer is injected: the fast one by default (digest.render), or any other with the same ``mime`` method
(a plain reference renderer proves the fast one right).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from email.utils import parseaddr
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Protocol

from digest import dkim
from digest.config import Settings
from digest.errors import DigestError
from digest.links import LinkBuilder, PersonalLinks, Signer
from digest.mail.wire import is_wire_ready
from digest.message import MimeEmail, build_message_wire, list_id_for, make_message_id
from digest.models import AttemptEnd, Delivery, DeliveryStatus, Issue, OutgoingMessage
from digest.signing_key import SigningKey

if TYPE_CHECKING:
    from digest.bounces.verp import ReturnPath
    from digest.render import Renderer

__all__ = ["Composer", "MimeRenderer", "address_of", "domain_of", "topic_labels"]

log = logging.getLogger("digest")


class MimeRenderer(Protocol):
    """What the composer needs of a renderer: an issue's subject and two bodies, ready for MIME."""

    def mime(self, issue: Issue, links: PersonalLinks, *, full_issue_url: str | None = None) -> MimeEmail: ...


def topic_labels(settings: Settings) -> dict[str, str]:
    """Section labels of the enabled topics (a topic without a label is shown by its name)."""
    return {name: spec.label or name for name, spec in settings.enabled_topics.items()}


class Composer:
    """Builds the complete message of an issue for its reader. Thread-safe once built; the renderer is
    built on first use (about a second: MJML and CSS inlining of the templates)."""

    def __init__(self, settings: Settings, signing_key: SigningKey, renderer: MimeRenderer | None = None) -> None:
        self.settings = settings
        self.signing_key = signing_key  # signs links and return paths (digest.signing_key)
        self._renderer = renderer

    @cached_property
    def labels(self) -> dict[str, str]:
        return topic_labels(self.settings)

    @cached_property
    def links(self) -> LinkBuilder:
        site = self.settings.site
        mailto = site.unsubscribe_mailto or address_of(site.sender)
        key = self.signing_key
        return LinkBuilder(site.base_url, Signer(key.current, previous=key.previous), mailto)

    @cached_property
    def return_path(self) -> ReturnPath:
        from digest.bounces.verp import return_path_for

        return return_path_for(self.settings, self.signing_key)

    @property
    def renderer(self) -> MimeRenderer:
        if self._renderer is None:
            self._renderer = self.fast_renderer
        return self._renderer

    @cached_property
    def fast_renderer(self) -> Renderer:
        """The default renderer (its ``view``, ``render`` and archive pages are used beyond messages)."""
        from digest.render import Renderer

        if isinstance(self._renderer, Renderer):
            return self._renderer
        return Renderer(self.settings)

    def subject(self, issue: Issue) -> str:
        from digest.email_view import issue_subject

        return issue_subject(self.settings, issue)

    def message_id(self, issue_id: int) -> str:
        """A new Message-ID for issue ``issue_id`` (random: made once per delivery record and stored)."""
        return make_message_id(issue_id, domain_of(self.settings.site.sender))

    def compose(self, issue: Issue, message_id: str, now: datetime) -> OutgoingMessage:
        """The complete message for one issue, dated ``now``; raises RenderError (a DigestError) when it
        cannot be made (an unusable address, a template error)."""
        sub = issue.subscriber
        key = str(issue.id) if issue.id is not None else None
        links = self.links.for_subscriber(sub.email, key, sub.id)
        rendered = self.renderer.mime(issue, links, full_issue_url=links.archive)
        data, wire_ready = build_message_wire(rendered, sender=self.settings.site.sender, recipient=sub.email,
                                              message_id=message_id, date=now, list_id=list_id_for(self.settings),
                                              links=links)
        if dkim.configured(self.settings):
            unsigned = len(data)
            data = dkim.sign(data, self.settings)
            # The signature header goes in front; it is as ready as the rest only if its lines are.
            wire_ready = wire_ready and is_wire_ready(data[:-unsigned])
        return OutgoingMessage(sender=address_of(self.settings.site.sender), recipient=sub.email,
                               message_id=message_id, data=data, wire_ready=wire_ready)

    def prepare(self, delivery: Delivery, issue: Issue | None, now: datetime) -> OutgoingMessage | AttemptEnd:
        """The message for one claimed delivery (``issue`` is its stored issue, None if gone), or the end
        of its attempt if it must not be sent."""
        sub = issue.subscriber if issue else None
        if issue is None or sub is None or not sub.active:
            # Unsubscribed or suppressed since the issue was built: never send it.
            return AttemptEnd(delivery.id, DeliveryStatus.FAILED, "subscriber no longer active")
        try:
            message = self.compose(issue, delivery.message_id, now)
        except DigestError as err:
            log.error("render failed subscriber=%s reason=%s", sub.email, err)
            return AttemptEnd(delivery.id, DeliveryStatus.FAILED, f"render: {err}")
        # The envelope sender names this delivery (VERP), so a bounce that comes back later through a
        # relay finds its record even when the DSN is mangled (digest.bounces).
        return replace(message, sender=self.return_path.address(delivery.id), delivery_id=delivery.id)


@lru_cache(maxsize=64)  # asked once per message, of the one configured sender
def address_of(sender: str) -> str:
    """The bare address of ``sender`` (``"Digest <d@x.org>"`` -> ``d@x.org``)."""
    return parseaddr(sender)[1] or sender


@lru_cache(maxsize=64)
def domain_of(sender: str) -> str:
    address = address_of(sender)
    return address.rsplit("@", 1)[1] if "@" in address else "localhost"
