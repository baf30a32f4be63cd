"""All storage I/O lives in this package: the Store and its schema and migrations."""

from digest.store.base import normalize_url
from digest.store.records import DeliveryAttention, IssueHealth, IssueHistory, IssueListing, SendRun, SourceRecord
from digest.store.store import Store

__all__ = ["DeliveryAttention", "IssueHealth", "IssueHistory", "IssueListing", "SendRun", "SourceRecord", "Store",
           "normalize_url"]
