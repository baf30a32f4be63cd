"""All storage I/O lives in this package: the Store and its schema and migrations.

``Store`` and ``normalize_url`` load on first use: the quick reader (``digest.store.quick``) lives in
this package too and must not pay for SQLAlchemy when a short command only reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from digest.store.records import DeliveryAttention, IssueHealth, IssueHistory, IssueListing, SendRun, SourceRecord

if TYPE_CHECKING:
    from digest.store.base import normalize_url
    from digest.store.store import Store

__all__ = ["DeliveryAttention", "IssueHealth", "IssueHistory", "IssueListing", "SendRun", "SourceRecord", "Store",
           "normalize_url"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from digest.store.store import Store

        return Store
    if name == "normalize_url":
        from digest.store.base import normalize_url

        return normalize_url
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
