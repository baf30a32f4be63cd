"""The arXiv announcement feeds (rss.arxiv.org, RSS 2.0 or Atom) as a source: today's new listings."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime

from lxml import etree

from digest.config import ArxivRssSource as ArxivRssSettings
from digest.errors import SourceError
from digest.models import FetchResult, Paper
from digest.sources.arxiv import ARXIV, ATOM, parse_xml
from digest.sources.http import HttpListingSource, conditional_validators
from digest.sources.normalize import clean_text, parse_datetime, split_arxiv_id, title_key

__all__ = ["ArxivRssSource", "RssFeed", "RssItem", "feed_url", "parse_feed"]

log = logging.getLogger(__name__)

DC = "{http://purl.org/dc/elements/1.1/}"
_FEED_ERROR = "Feed error for query"
# "arXiv:2604.21952v1 Announce Type: new \nAbstract: ..." -> the announce type, then the abstract.
_DESCRIPTION = re.compile(
    r"^\s*arXiv:\S+\s+Announce\s+Type:\s*(?P<type>[\w-]+)\s*(?:Abstract:\s*)?", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class RssItem:
    """One announcement: the paper and how it was announced (new, cross, replace, replace-cross)."""

    paper: Paper
    announce_type: str


@dataclass(frozen=True, slots=True)
class RssFeed:
    """A parsed feed; ``date`` is the announcement date it claims (``pubDate``), if any."""

    title: str
    date: datetime | None
    items: list[RssItem]


def feed_url(base: str, categories: list[str]) -> str:
    """``{base}/cs.LG+cs.AI``: one request for all categories."""
    return f"{base.rstrip('/')}/{'+'.join(categories)}"


def parse_feed(content: bytes, source: str = "arxiv_rss") -> RssFeed:
    """An rss.arxiv.org feed (RSS 2.0 or Atom) -> its items in feed order.

    A feed without items is normal (weekends, holidays). The feed arXiv serves for a bad archive name
    ("Feed error for query ...") and any document that is not a feed are SourceError. Each paper is
    listed on the feed's announcement day (its date, UTC), else its item's.
    """
    root = parse_xml(content, source)
    if root.tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise SourceError(source, "RSS document has no <channel>")
        title = clean_text(channel.findtext("title"))
        _check_error(source, title, channel.findtext("description"))
        feed_date = parse_datetime(channel.findtext("pubDate") or channel.findtext("lastBuildDate"))
        items = [_rss_item(item, source) for item in channel.findall("item")]
    elif root.tag == f"{ATOM}feed":
        title = clean_text(root.findtext(f"{ATOM}title"))
        _check_error(source, title, root.findtext(f"{ATOM}subtitle"))
        feed_date = parse_datetime(root.findtext(f"{ATOM}updated"))
        items = [_atom_item(entry, source) for entry in root.findall(f"{ATOM}entry")]
    else:
        raise SourceError(source, f"expected an RSS or Atom feed, got <{etree.QName(root).localname}>")
    announced = feed_date.date() if feed_date else None
    kept = [_listed(item, announced) for item in items if item is not None]
    if len(kept) < len(items):
        log.warning("%s: skipped %d items without a title", source, len(items) - len(kept))
    return RssFeed(title, feed_date, kept)


def _listed(item: RssItem, announced: date | None) -> RssItem:
    """The item listed on the feed's announcement day, if the feed names one (else on its own date)."""
    if announced is None:
        return item
    return RssItem(replace(item.paper, listed_on=announced), item.announce_type)


def _check_error(source: str, title: str, description: str | None) -> None:
    if title.startswith(_FEED_ERROR):
        raise SourceError(source, f"arXiv feed error: {clean_text(description) or title}")


def _rss_item(item: etree._Element, source: str) -> RssItem | None:
    authors = [a for node in item.findall(f"{DC}creator") for a in _split_authors(node.text)]
    return _item(
        source,
        raw_id=item.findtext("guid") or item.findtext("link"),
        title=item.findtext("title"),
        description=item.findtext("description"),
        announce_type=item.findtext(f"{ARXIV}announce_type"),
        authors=authors,
        categories=[c.text or "" for c in item.findall("category")],
        published=item.findtext("pubDate"),
    )


def _atom_item(entry: etree._Element, source: str) -> RssItem | None:
    names = [a.findtext(f"{ATOM}name") for a in entry.findall(f"{ATOM}author")]
    names += [node.text for node in entry.findall(f"{DC}creator")]
    return _item(
        source,
        raw_id=entry.findtext(f"{ATOM}id"),
        title=entry.findtext(f"{ATOM}title"),
        description=entry.findtext(f"{ATOM}summary"),
        announce_type=entry.findtext(f"{ARXIV}announce_type"),
        authors=[a for name in names for a in _split_authors(name)],
        categories=[c.get("term") or "" for c in entry.findall(f"{ATOM}category")],
        published=entry.findtext(f"{ATOM}published") or entry.findtext(f"{ATOM}updated"),
    )


def _item(
    source: str,
    *,
    raw_id: str | None,
    title: str | None,
    description: str | None,
    announce_type: str | None,
    authors: list[str],
    categories: list[str],
    published: str | None,
) -> RssItem | None:
    clean_title = clean_text(title)
    if not clean_title:
        return None
    arxiv_id, version = split_arxiv_id(raw_id)
    abstract = description or ""
    described_type = ""
    if match := _DESCRIPTION.match(abstract):
        described_type = match.group("type")
        abstract = abstract[match.end():]
    when = parse_datetime(published)
    paper = Paper(
        id=arxiv_id or title_key(clean_title),
        version=version,
        title=clean_title,
        abstract=clean_text(abstract),
        authors=tuple(authors),
        published=when,
        url=f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else None,
        pdf_url=f"https://arxiv.org/pdf/{arxiv_id}" if arxiv_id else None,
        categories=tuple(dict.fromkeys(c.strip() for c in categories if c.strip())),
        sources=(source,),
        listed_on=when.date() if when else None,
    )
    kind = clean_text(announce_type) or described_type
    return RssItem(paper, kind.lower())


def _split_authors(text: str | None) -> list[str]:
    """``dc:creator`` holds every author, comma-separated."""
    return [name for name in (clean_text(part) for part in (text or "").split(",")) if name]


class ArxivRssSource(HttpListingSource[ArxivRssSettings]):
    """One request for ``{url}/{cat+cat...}``; keeps the announce types in ``announce_types``.

    The feed only ever holds the latest announcement, so ``day`` is ignored (a replayed folder of
    recorded feeds, ``file:`` URL, is read by day). Papers are listed on the feed's announcement day
    (its ``pubDate``), else their item's, else the day asked for. State kept between runs:
    ``url``, ``etag``, ``last_modified``, ``feed_date`` and ``announce_types``; a feed with the same
    date as last time, for the same URL and announce types, has been seen already and comes back as
    ``not_modified``.
    """

    default_name = "arxiv_rss"

    def _fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        if not self.settings.url:
            raise SourceError(self.name, "no url configured")
        if not self.settings.categories:
            raise SourceError(self.name, "no categories configured")
        url = self._http.url_for(feed_url(self.settings.url, self.settings.categories))
        etag, last_modified = conditional_validators(state, url)
        response = self._http.get(
            url,
            etag=etag,
            last_modified=last_modified,
            accept="application/rss+xml, application/atom+xml, application/xml;q=0.9",
        )
        if response.not_modified:
            return FetchResult(self.name, [], dict(state), not_modified=True)
        feed = parse_feed(response.content, self.name)
        wanted = {t.lower() for t in self.settings.announce_types}
        new_state = response.validators
        new_state["announce_types"] = ",".join(sorted(wanted))
        feed_date = feed.date.isoformat() if feed.date else ""
        if feed_date:
            new_state["feed_date"] = feed_date
            seen = all(state.get(k) == new_state[k] for k in ("url", "feed_date", "announce_types"))
            if seen:
                return FetchResult(self.name, [], new_state, not_modified=True)
        papers: dict[str, Paper] = {}
        for item in feed.items:
            if not wanted or item.announce_type in wanted:
                paper = item.paper if item.paper.listed_on or day is None else replace(item.paper, listed_on=day)
                papers.setdefault(paper.id, paper)
        if not feed.items:
            log.info("%s: %s has no items (normal on weekends and holidays)", self.name, url)
        return FetchResult(self.name, list(papers.values()), new_state)
