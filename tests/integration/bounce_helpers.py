"""Shared by the bounce tests: a store with real deliveries, and bounce messages filled in for them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from digest.bounces import return_path_for
from digest.config import Settings
from digest.signing_key import signing_key
from digest.store import Store

SHAPES = Path(__file__).resolve().parent.parent / "fixtures" / "bounces" / "shapes"


def delivery_of(store: Store, email: str, day: date) -> tuple[int, str]:
    """(delivery id, Message-ID) of ``email``'s issue dated ``day``."""
    sub = store.get_subscriber(email)
    assert sub is not None and sub.id is not None
    issue_id = store.issue_id_for(sub.id, day)
    assert issue_id is not None, f"no issue for {email} on {day}"
    delivery = store.delivery_for_issue(issue_id)
    assert delivery is not None
    return delivery.id, delivery.message_id


def shape(name: str, *, return_path: str, recipient: str, message_id: str) -> bytes:
    """A corpus message with its placeholders filled in."""
    text = (SHAPES / name).read_text(encoding="utf-8")
    for key, value in (("{RETURN_PATH}", return_path), ("{RECIPIENT}", recipient), ("{MESSAGE_ID}", message_id)):
        text = text.replace(key, value)
    return text.encode("utf-8")


def bounce_for(settings: Settings, store: Store, name: str, email: str, day: date,
               recipient: str | None = None) -> bytes:
    """Corpus message ``name`` as it would come back for ``email``'s delivery dated ``day``."""
    delivery_id, message_id = delivery_of(store, email, day)
    return shape(name, return_path=return_path_for(settings, signing_key(settings, store)).address(delivery_id),
                 recipient=recipient or email, message_id=message_id)
