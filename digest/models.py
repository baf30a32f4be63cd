"""The typed values passed between pipeline stages: papers, topics, subscribers, issues, messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

OTHER_SECTION = "other"
OTHER_LABEL = "Other papers"


def section_label(name: str, labels: Mapping[str, str]) -> str:
    """The one label a section shows everywhere (selection, a stored issue loaded again, preview, mail):
    the topic's configured label, "Other papers" for papers of no followed topic, else the name."""
    return labels.get(name) or (OTHER_LABEL if name == OTHER_SECTION else name)


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    """One topic given to one paper: the tagger's score and the evidence behind it."""

    topic: str
    score: float
    why: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Paper:
    """A paper as the pipeline knows it.

    ``id`` is the arXiv id without version (``2403.12345``) where one is known, else a stable id derived
    from the normalised title (``title:<hex>``). ``sources`` names every source that reported it.
    ``topics`` is empty until the tagger has run. ``listed_on`` is the day of the listing that carried
    it (HF's daily date, arXiv's announcement, the day fetched), as the source reported it; the store
    keeps the earliest it was given and, when a source knows none, the day it was fetched.
    """

    id: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    published: datetime | None = None
    version: int | None = None
    url: str | None = None
    pdf_url: str | None = None
    code_url: str | None = None
    project_url: str | None = None
    upvotes: int | None = None
    ai_summary: str | None = None
    ai_keywords: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    first_seen: datetime | None = None
    listed_on: date | None = None
    topics: tuple[TopicAssignment, ...] = ()

    def with_topics(self, topics: tuple[TopicAssignment, ...]) -> Paper:
        return replace(self, topics=topics)

    @property
    def topic_names(self) -> tuple[str, ...]:
        return tuple(t.topic for t in self.topics)

    @property
    def link(self) -> str:
        """The page a reader should land on: the given URL, else arXiv's abstract page, else (no id
        known yet) an arXiv title search that finds it."""
        if self.url:
            return self.url
        if not self.id.startswith("title:"):
            return f"https://arxiv.org/abs/{self.id}"
        # A title may hold a lone surrogate (JSON can carry one), which has no UTF-8 form: left out.
        return "https://arxiv.org/search/?searchtype=title&query=" + quote_plus(self.title, errors="ignore")


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


class Verdict(StrEnum):
    """What a reader said of a paper: more like it, or less (a paper of their own library counts as more)."""

    MORE = "more"
    LESS = "less"


@dataclass(frozen=True, slots=True)
class Feedback:
    """One reader's latest verdict on one paper, and when they gave it."""

    paper_id: str
    verdict: Verdict
    at: datetime


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A reader and what they asked for.

    With no ``topics``, ``keywords`` or ``authors`` the subscriber follows every topic. ``weekday``
    (0 = Monday) is the day a weekly subscriber's issue is due.
    """

    email: str
    name: str = ""
    topics: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    frequency: Frequency = Frequency.DAILY
    send_at: time = time(8, 0)
    tz: str = "UTC"
    max_papers: int = 20
    send_empty: bool = False
    weekday: int = 0
    status: SubscriberStatus = SubscriberStatus.CONFIRMED
    paused: bool = False
    id: int | None = None
    created_at: datetime | None = None

    @property
    def follows_everything(self) -> bool:
        return not (self.topics or self.keywords or self.authors)

    @property
    def active(self) -> bool:
        return self.status is SubscriberStatus.CONFIRMED and not self.paused

    def send_moment(self, day: date) -> datetime:
        """When this reader's issue dated ``day`` is meant to go out, as an aware UTC datetime."""
        return datetime.combine(day, self.send_at, tzinfo=ZoneInfo(self.tz)).astimezone(UTC)

    def day_end(self, day: date) -> datetime:
        """The reader's local midnight that ends ``day``, as an aware UTC datetime: an issue dated
        ``day`` that has not gone out by then is over (the next one is on its way)."""
        return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=ZoneInfo(self.tz)).astimezone(UTC)


def rank_order(score: float, paper_id: str) -> tuple[float, str]:
    """Where a paper ranks for a reader, best first: the higher score, then the lower paper id (the
    selection's order, and so which entry is an issue's top pick)."""
    return (-score, paper_id)


@dataclass(frozen=True, slots=True)
class IssueEntry:
    """One paper in an issue, with the one-line reason it was chosen for this reader."""

    paper: Paper
    reason: str
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class IssueSection:
    """The papers of one topic (or ``other``) in an issue, best first."""

    topic: str
    label: str
    entries: tuple[IssueEntry, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """One subscriber's issue for one date: sections in the subscriber's order of topics."""

    subscriber: Subscriber
    date: date
    sections: tuple[IssueSection, ...]
    top_pick: IssueEntry | None = None
    id: int | None = None
    created_at: datetime | None = None

    @property
    def entries(self) -> tuple[IssueEntry, ...]:
        return tuple(e for s in self.sections for e in s.entries)

    @property
    def paper_ids(self) -> tuple[str, ...]:
        return tuple(e.paper.id for e in self.entries)

    @property
    def count(self) -> int:
        return sum(len(s.entries) for s in self.sections)


class DeliveryStatus(StrEnum):
    """Life of a per-recipient delivery record: pending -> sending -> sent | failed | unknown."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Outcome(StrEnum):
    """What a mailer learned about one message."""

    DELIVERED = "delivered"  # accepted (SMTP 250, file written)
    TRANSIENT = "transient"  # 4xx or connection failure before DATA: retry later
    PERMANENT = "permanent"  # 5xx: do not retry; a hard bounce when SendResult.bounce says so
    UNKNOWN = "unknown"  # connection lost after DATA was sent: may or may not have arrived


@dataclass(frozen=True, slots=True)
class Delivery:
    """The per-recipient record that makes every send safe to re-run."""

    id: int
    issue_id: int
    subscriber_id: int
    status: DeliveryStatus
    message_id: str
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    in_doubt: bool = False
    issue_date: date | None = None


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """The end of one delivery attempt: what the send engine records for it (``Store.settle``)."""

    delivery_id: int
    status: DeliveryStatus
    detail: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """The two bodies of one email, before headers are added."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for a mailer: envelope plus the complete RFC 5322 bytes.

    ``wire_ready`` promises that ``data`` has CRLF line ends only, ends with one, and has no line that
    starts with a dot: SMTP can send it as it is (no line-end repair, no dot-stuffing, both of which
    scan the whole message). build_message knows this of what it writes; anything else leaves it False.
    """

    sender: str
    recipient: str
    message_id: str
    data: bytes
    delivery_id: int | None = None
    wire_ready: bool = False


@dataclass(frozen=True, slots=True)
class SendResult:
    """A mailer's verdict on one message; ``detail`` is the server's reply or the error, one line."""

    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None
    # A PERMANENT refusal about the address itself (counts towards suppressing the reader), not about
    # this message (a spam filter, a policy): see digest.mail.smtp.
    bounce: bool = False
    # A PERMANENT refusal at RCPT that named no reason about the address: it suppresses the reader only
    # when the same address is refused again on a later issue (a misconfigured relay refuses everyone).
    unexplained: bool = False


@dataclass(slots=True)
class FetchResult:
    """What one source run produced: papers, plus what to remember for the next incremental run."""

    source: str
    papers: list[Paper] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    not_modified: bool = False
