"""The public archive: sent issues as web pages (the email's own HTML), an index, and Atom feeds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from digest.email_view import clean_text, safe_url, summarize
from digest.links import PersonalLinks
from digest.models import DeliveryStatus, Paper

if TYPE_CHECKING:
    from digest.pipeline import Pipeline

# Who an archived issue says it was sent to: never the real reader.
PUBLIC_RECIPIENT = "a reader"
FEED_DAYS = 30
FEED_ENTRIES = 50
INDEX_ISSUES = 200


@dataclass(frozen=True, slots=True)
class IssueLink:
    id: int
    papers: int
    sent_at: datetime | None
    subject: str = ""


@dataclass(frozen=True, slots=True)
class ArchiveDay:
    """The sent issues of one date (each reader's issue is their own selection)."""

    date: date
    issues: tuple[IssueLink, ...]


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
    """Reads sent issues and recent papers from the store and shapes them for the public pages."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.base_url = pipeline.links.base_url
        # Links in an archived issue lead to public pages, never to anyone's preferences or unsubscribe.
        self.public_links = PersonalLinks(preferences=f"{self.base_url}/preferences",
                                          unsubscribe=f"{self.base_url}/unsubscribe",
                                          unsubscribe_mailto="", archive=f"{self.base_url}/archive")

    def issue_html(self, issue_id: int) -> str | None:
        """The HTML of a sent issue as its email showed it, with public links; None if not sent."""
        store = self.pipeline.store
        delivery = store.delivery_for_issue(issue_id)
        if delivery is None or delivery.status is not DeliveryStatus.SENT:
            return None
        issue = store.load_issue(issue_id, self.pipeline.labels)
        if issue is None:
            return None
        public = replace(issue, subscriber=replace(issue.subscriber, email=PUBLIC_RECIPIENT, name=""))
        url = f"{self.base_url}/archive/{issue_id}"
        return self.pipeline.renderer.render(public, self.public_links, full_issue_url=url).html

    def days(self, limit: int = INDEX_ISSUES) -> list[ArchiveDay]:
        """Recent sent issues grouped by date, newest first."""
        grouped: dict[date, list[IssueLink]] = {}
        for row in self.pipeline.store.list_issues(limit=limit):
            if row["status"] != DeliveryStatus.SENT.value:
                continue
            grouped.setdefault(row["issue_date"], []).append(
                IssueLink(row["id"], row["paper_count"] or 0, row["sent_at"], row["subject"] or ""))
        return [ArchiveDay(day, tuple(issues)) for day, issues in grouped.items()]

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


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
