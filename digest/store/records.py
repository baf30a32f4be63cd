"""The typed values the store returns besides the domain's own (``digest.models``): rows of its
bookkeeping tables and the figures reports are made of. Frozen, so a caller cannot mistake one for a
handle on the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from digest.models import DeliveryStatus

__all__ = ["DeliveryAttention", "IssueHealth", "IssueHistory", "IssueListing", "SendRun", "SourceRecord"]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    source: str
    state: dict[str, str]
    last_fetch_at: datetime | None
    last_ok_at: datetime | None
    last_result: str | None
    last_error: str | None
    last_new: int
    last_updated: int


@dataclass(frozen=True, slots=True)
class SendRun:
    id: int
    issue_date: date
    started_at: datetime
    finished_at: datetime | None
    sent: int
    skipped: int
    failed: int


@dataclass(frozen=True, slots=True)
class IssueHistory:
    """What building one subscriber's issue for a date needs from the store (``Store.issue_histories``)."""

    issue_id: int | None = None  # the issue already built for that date, if any
    delivery: DeliveryStatus | None = None  # the status of that issue's delivery record
    received: frozenset[str] = frozenset()  # papers sent (or on their way) to them in other issues
    last_issue_at: datetime | None = None  # when their latest issue before that date was built


@dataclass(frozen=True, slots=True)
class IssueListing:
    """One built issue and its delivery, as ``Store.list_issues`` lists them."""

    id: int
    issue_date: date
    subject: str
    paper_count: int
    subscriber_id: int
    status: DeliveryStatus
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryAttention:
    """A delivery someone should look at (failed, fate unknown, or pending after failed attempts)."""

    id: int
    issue_date: date
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    email: str


@dataclass(frozen=True, slots=True)
class IssueHealth:
    """What became of the messages of one issue date (``Store.list_health``): ``delivered`` counts
    those handed over that no bounce came back for."""

    issue_date: date
    sent: int = 0
    delivered: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
