"""Helpers every part of the Store shares: reading rows into models and back, ids, chunks of ids."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from digest.config import parse_hhmm
from digest.errors import StoreError
from digest.models import Frequency, Paper, Subscriber, SubscriberStatus, TopicAssignment

# SQLAlchemy only for the type checker: the quick reader (digest.store.quick) reads rows with these
# functions and must not load it.
if TYPE_CHECKING:
    from typing import TypeAlias

    from sqlalchemy import CursorResult, RowMapping

    # A row read by column name: SQLAlchemy's (whose keys may also be Column objects) or a plain dict.
    Row: TypeAlias = RowMapping | Mapping[str, Any]
else:
    Row = Mapping


def utc_now() -> datetime:
    return datetime.now(UTC)


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``: IN lists and multi-row VALUES stay within every backend's limits."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the one row an INSERT added."""
    key = result.inserted_primary_key
    if key is None:  # only for executemany, which these INSERTs never are
        raise StoreError("the database returned no id for a new row")
    new_id: int = key[0]
    return new_id


def row_to_paper(r: Row, topics: tuple[TopicAssignment, ...] = ()) -> Paper:
    return Paper(
        id=r["id"], title=r["title"], abstract=r["abstract"] or "", authors=tuple(r["authors"] or ()),
        published=r["published"], version=r["version"], url=r["url"], pdf_url=r["pdf_url"],
        code_url=r["code_url"], project_url=r["project_url"], upvotes=r["upvotes"],
        ai_summary=r["ai_summary"], ai_keywords=tuple(r["ai_keywords"] or ()),
        categories=tuple(r["categories"] or ()), sources=tuple(r["sources"] or ()),
        first_seen=r["first_seen"], listed_on=r["listed_on"], topics=topics,
    )


def row_to_subscriber(r: Row) -> Subscriber:
    return Subscriber(
        email=r["email"], name=r["name"] or "", topics=tuple(r["topics"] or ()),
        keywords=tuple(r["keywords"] or ()), exclude=tuple(r["exclude"] or ()),
        authors=tuple(r["authors"] or ()), frequency=Frequency(r["frequency"]),
        send_at=parse_hhmm(r["send_at"]), tz=r["tz"], max_papers=r["max_papers"],
        send_empty=bool(r["send_empty"]), weekday=r["weekday"], status=SubscriberStatus(r["status"]),
        paused=bool(r["paused"]), id=r["id"], created_at=r["created_at"],
    )


def bounce_health(r: Row) -> dict[str, Any]:
    """A subscriber row's bounce and complaint counts, the latest one, and why its status last changed
    (``Store.bounce_info``'s values)."""
    last = None
    if r["last_bounce_at"] is not None:
        last = {"at": r["last_bounce_at"].isoformat(), "kind": r["last_bounce_kind"],
                "status": r["last_bounce_status"], "diagnostic": r["last_bounce_diagnostic"]}
    changed = r["status_changed_at"]
    return {"hard_bounces": r["hard_bounces"], "soft_bounces": r["soft_bounces"], "complaints": r["complaints"],
            "status_reason": r["status_reason"], "status_changed_at": changed.isoformat() if changed else None,
            "last_bounce": last}
