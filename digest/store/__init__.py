"""All storage I/O lives in this package: the Store and its schema and migrations."""

from digest.store.store import SendRun, SourceRecord, Store, normalize_url

__all__ = ["SendRun", "SourceRecord", "Store", "normalize_url"]
