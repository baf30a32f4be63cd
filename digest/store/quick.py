"""Quick reads for short commands: the subscribers of an up-to-date SQLite file through the standard
library's sqlite3, without loading SQLAlchemy (which alone costs more than half of `digest subscribers
list`'s start-up).

A fast path with its reference beside it: ``Store.iter_subscribers`` and ``Store.bounce_info`` are the
reference, and
tests/integration/test_store_quick.py checks that both give equal values. The quick reader answers only
when it can answer exactly as the Store would: a SQLite file whose schema revision is the newest
migration's (anything else, a database to migrate or PostgreSQL, is the Store's). Columns are decoded
by the types the schema declared for them (JSON, DATETIME), so a new column needs nothing here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from digest.models import Subscriber
from digest.store.revision import schema_head
from digest.store.rows import bounce_health, row_to_subscriber

__all__ = ["QuickReader", "SubscriberReads"]

_BATCH = 500


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _utc(value: Any) -> Any:
    # SQLAlchemy keeps SQLite datetimes as naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff" (UTCDateTime).
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if isinstance(value, str) else value


_DECODERS = {"JSON": _json, "DATETIME": _utc}


class SubscriberReads(Protocol):
    """What a listing of subscribers reads; ``Store`` and ``QuickReader`` both answer it."""

    def iter_subscribers(self) -> Iterator[Subscriber]: ...

    def bounce_info(self) -> dict[str, dict[str, Any]]: ...


class QuickReader:
    """Read-only access to an up-to-date SQLite database; ``open`` says whether one can be had."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> QuickReader | None:
        """A reader of the SQLite file at ``path``, or None when the Store must answer instead: no such
        file (never created here), a schema revision other than the newest migration's, or any error."""
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
        except sqlite3.Error:
            return None
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            conn.close()
            return None
        if revision is None or revision[0] != schema_head():
            conn.close()
            return None
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    def iter_subscribers(self) -> Iterator[Subscriber]:
        """Every subscriber by id, as ``Store.iter_subscribers()`` gives them."""
        return (row_to_subscriber(row) for row in self._subscriber_rows())

    def bounce_info(self) -> dict[str, dict[str, Any]]:
        """Per subscriber email, what ``Store.bounce_info()`` says."""
        return {row["email"]: bounce_health(row) for row in self._subscriber_rows()}

    def _subscriber_rows(self) -> Iterator[dict[str, Any]]:
        """The subscribers' rows by id, decoded, in batches (memory stays flat, as the Store's)."""
        decoders = self._decoders("subscribers")
        last_id = 0
        while True:
            cursor = self._conn.execute("SELECT * FROM subscribers WHERE id > ? ORDER BY id LIMIT ?",
                                        (last_id, _BATCH))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            if not rows:
                return
            for values in rows:
                yield {name: decoders[name](value) if name in decoders else value
                       for name, value in zip(names, values, strict=True)}
            last_id = rows[-1][names.index("id")]

    def _decoders(self, table: str) -> dict[str, Callable[[Any], Any]]:
        """Column name -> decoder, for the columns whose declared type needs one."""
        declared = self._conn.execute("SELECT name, type FROM pragma_table_info(?)", (table,)).fetchall()
        return {name: _DECODERS[kind.upper()] for name, kind in declared if kind.upper() in _DECODERS}
