"""The archive: the public daily editions (the day's papers by topic) and Atom feeds, which show
nothing of any reader, and each reader's own issue behind their signed link."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from digest.email_view import clean_text, safe_url, summarize
from digest.links import PersonalLinks
from digest.models import DeliveryStatus, Paper, rank_order

if TYPE_CHECKING:
    from digest.pipeline import Pipeline

# Who a reader's issue page says it was sent to: the page is theirs, but a link can be forwarded.
PUBLIC_RECIPIENT = "a reader"
FEED_DAYS = 30
FEED_ENTRIES = 50
INDEX_DAYS = 90
# An edition lists at most this many papers per topic (a busy arXiv day has hundreds).
EDITION_PER_TOPIC = 50
# Beyond SQLite's and PostgreSQL's integer range: no issue has such an id (and asking would overflow).
MAX_ISSUE_ID = 2**63 - 1
OTHER = "Other papers"


@dataclass(frozen=True, slots=True)
class EditionPaper:
    title: str
    url: str
    authors: str
    summary: str


@dataclass(frozen=True, slots=True)
class EditionSection:
    label: str
    papers: tuple[EditionPaper, ...]
    more: int


@dataclass(frozen=True, slots=True)
class Edition:
    """The non-personal edition of one day: every paper first seen that day (UTC), by topic."""

    date: date
    count: int
    sections: tuple[EditionSection, ...]


@dataclass(frozen=True, slots=True)
class EditionDay:
    date: date
    count: int


@dataclass(frozen=True, slots=True)
class FeedEntry:
    id: str
    title: str
    url: str
    updated: str
    authors: tuple[str, ...]
    summary: str
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Feed:
    id: str
    title: str
    subtitle: str
    self_url: str
    site_url: str
    updated: str
    entries: tuple[FeedEntry, ...]


class Archive:
    """Reads papers and sent issues from the store and shapes them for the archive pages."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.base_url = pipeline.links.base_url
        # Links on a reader's issue page lead to public pages, never to anyone's preferences or
        # unsubscribe: the issue link is for reading, and may be forwarded.
        self.public_links = PersonalLinks(preferences=f"{self.base_url}/preferences",
                                          unsubscribe=f"{self.base_url}/unsubscribe",
                                          unsubscribe_mailto="", archive=f"{self.base_url}/archive")

    def reader_issue_html(self, issue_id: int, url: str) -> str | None:
        """The HTML of a sent issue as its email showed it (``url``: the reader's own link to it), with
        public links and no address; None if there is no such sent issue."""
        if not 0 < issue_id <= MAX_ISSUE_ID:
            return None
        store = self.pipeline.store
        delivery = store.delivery_for_issue(issue_id)
        if delivery is None or delivery.status is not DeliveryStatus.SENT:
            return None
        issue = store.load_issue(issue_id, self.pipeline.labels)
        if issue is None:
            return None
        public = replace(issue, subscriber=replace(issue.subscriber, email=PUBLIC_RECIPIENT, name=""))
        # The reader's own "More like this" / "Less like this" links, as in their email (each needs a
        # press of a button on its page; the public editions carry none).
        sub_id = issue.subscriber.id
        links = replace(self.public_links, feedback=None if sub_id is None else
                        self.pipeline.links.feedback(issue.subscriber.email, sub_id))
        html: str = self.pipeline.renderer.render(public, links, full_issue_url=url).html
        return html

    def sent_issue_date(self, issue_id: int) -> date | None:
        """The date of a sent issue (an old numbered link leads to that day's public edition)."""
        if not 0 < issue_id <= MAX_ISSUE_ID:
            return None
        delivery = self.pipeline.store.delivery_for_issue(issue_id)
        if delivery is None or delivery.status is not DeliveryStatus.SENT:
            return None
        issue = self.pipeline.store.load_issue(issue_id, self.pipeline.labels)
        return issue.date if issue is not None else None

    def days(self, now: datetime, limit: int = INDEX_DAYS) -> list[EditionDay]:
        """The days of the last ``limit`` with new papers, newest first, and how many each had."""
        since = datetime.combine(now.date() - timedelta(days=limit), time(0), tzinfo=UTC)
        counts: dict[date, int] = {}
        for paper in self.pipeline.store.list_papers(since=since):
            if paper.first_seen is not None:
                day = _utc(paper.first_seen).date()
                counts[day] = counts.get(day, 0) + 1
        return [EditionDay(day, n) for day, n in sorted(counts.items(), reverse=True)]

    def edition(self, day: date) -> Edition | None:
        """The day's papers by topic (each paper under each of its topics, best first); None if none.

        Built from the papers alone, never from what anyone was sent, so it says nothing about readers.
        """
        start = datetime.combine(day, time(0), tzinfo=UTC)
        papers = self.pipeline.store.list_papers(since=start, until=start + timedelta(days=1))
        if not papers:
            return None
        labels = self.pipeline.labels
        by_topic: dict[str, list[tuple[float, Paper]]] = {name: [] for name in labels}
        other: list[tuple[float, Paper]] = []
        for paper in papers:
            placed = False
            for topic in paper.topics:
                if topic.topic in by_topic:
                    by_topic[topic.topic].append((topic.score, paper))
                    placed = True
            if not placed:
                other.append((0.0, paper))
        sections = [self._section(clean_text(labels[name]) or name, entries)
                    for name, entries in by_topic.items() if entries]
        if other:
            sections.append(self._section(OTHER, other))
        return Edition(day, len(papers), tuple(sections))

    @staticmethod
    def _section(label: str, entries: list[tuple[float, Paper]]) -> EditionSection:
        entries.sort(key=lambda e: rank_order(e[0], e[1].id))
        shown = tuple(
            EditionPaper(title=clean_text(p.title) or "(untitled)",
                         url=safe_url(p.link) or safe_url(p.pdf_url),
                         authors=", ".join(a for a in (clean_text(a) for a in p.authors[:6]) if a)
                         + (" et al." if len(p.authors) > 6 else ""),
                         summary=summarize(p))
            for _, p in entries[:EDITION_PER_TOPIC])
        return EditionSection(label, shown, max(0, len(entries) - EDITION_PER_TOPIC))

    def feed(self, topic: str | None, now: datetime) -> Feed:
        """Recent papers (of one topic, or all), newest first, as an Atom feed's content."""
        labels = self.pipeline.labels
        papers = self.pipeline.store.list_papers(since=now - timedelta(days=FEED_DAYS), topic=topic)
        papers = papers[:FEED_ENTRIES]
        site = clean_text(self.pipeline.settings.site.title) or "Paper Digest"
        path = f"/archive/feed/{quote(topic)}.atom" if topic else "/archive/feed.atom"
        entries = tuple(self._entry(p, labels) for p in papers)
        updated = max((e.updated for e in entries), default=_rfc3339(now))
        label = clean_text(labels.get(topic, topic)) if topic else "all topics"
        return Feed(id=f"{self.base_url}{path}", title=f"{site} · {label}",
                    subtitle=f"New machine-learning papers on {label}, as {site} picks them.",
                    self_url=f"{self.base_url}{path}", site_url=f"{self.base_url}/archive", updated=updated,
                    entries=entries)

    def _entry(self, paper: Paper, labels: dict[str, str]) -> FeedEntry:
        host = urlsplit(self.base_url).hostname or "localhost"
        url = safe_url(paper.link) or safe_url(paper.pdf_url) or f"{self.base_url}/archive"
        seen = paper.first_seen or paper.published or datetime.now(UTC)
        return FeedEntry(
            id=f"tag:{host},2024:paper:{quote(paper.id, safe='')}",
            title=clean_text(paper.title) or "(untitled)",
            url=url,
            updated=_rfc3339(seen),
            authors=tuple(a for a in (clean_text(a) for a in paper.authors[:20]) if a),
            summary=summarize(paper, limit=600),
            categories=tuple(clean_text(labels.get(t, t)) for t in paper.topic_names),
        )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
