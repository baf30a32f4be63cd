"""The arXiv API (Atom) source: category query, newest first, paged politely until a date or a cap."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time

from lxml import etree

from digest.config import ArxivSource as ArxivSettings
from digest.errors import SourceError
from digest.models import FetchResult, Paper
from digest.sources.http import HttpListingSource
from digest.sources.normalize import clean_text, parse_datetime, split_arxiv_id, title_key

__all__ = ["ArxivSource", "AtomPage", "atom_error_message", "build_query", "parse_atom", "parse_xml"]

log = logging.getLogger(__name__)

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"


def parse_xml(content: bytes, source: str) -> etree._Element:
    """Bytes -> root element, strictly: a broken or truncated document is SourceError, not a guess.

    Entities are not expanded and nothing is fetched from the network.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as err:
        reason = " ".join(str(err).split())
        raise SourceError(source, f"invalid XML ({len(content)} bytes): {reason}") from err
    if root is None:
        raise SourceError(source, "empty XML document")
    return root


@dataclass(frozen=True, slots=True)
class AtomPage:
    """One page of API results and the paging numbers arXiv reported with it."""

    papers: list[Paper]
    total_results: int
    start_index: int
    entry_count: int


def parse_atom(content: bytes, source: str = "arxiv") -> AtomPage:
    """An API response -> its papers, in feed order; the API's error entry becomes SourceError.

    The API names no announcement day: papers are listed on the day the feed says it was answered
    (its ``<updated>``), the listing as it stood that day."""
    root = parse_xml(content, source)
    if root.tag != f"{ATOM}feed":
        raise SourceError(source, f"expected an Atom <feed>, got <{etree.QName(root).localname}>")
    papers = []
    answered = parse_datetime(root.findtext(f"{ATOM}updated"))
    listed = answered.date() if answered else None
    entries = root.findall(f"{ATOM}entry")
    for entry in entries:
        entry_id = entry.findtext(f"{ATOM}id") or ""
        if "/api/errors" in entry_id:
            message = clean_text(entry.findtext(f"{ATOM}summary")) or entry_id
            raise SourceError(source, f"arXiv API error: {message}")
        paper = _paper(entry, entry_id, source, listed)
        if paper is not None:
            papers.append(paper)
    return AtomPage(
        papers=papers,
        total_results=_int(root.findtext(f"{OPENSEARCH}totalResults")),
        start_index=_int(root.findtext(f"{OPENSEARCH}startIndex")),
        entry_count=len(entries),
    )


def atom_error_message(content: bytes) -> str | None:
    """The message of arXiv's error feed (sent with HTTP 400), if ``content`` is one."""
    try:
        parse_atom(content, "arxiv")
    except SourceError as err:
        return err.reason if err.reason.startswith("arXiv API error") else None
    return None


def _paper(entry: etree._Element, entry_id: str, source: str, listed: date | None) -> Paper | None:
    title = clean_text(entry.findtext(f"{ATOM}title"))
    if not title:
        return None
    arxiv_id, version = split_arxiv_id(entry_id)
    primary = entry.find(f"{ARXIV}primary_category")
    terms = [primary.get("term")] if primary is not None else []
    terms += [c.get("term") for c in entry.findall(f"{ATOM}category")]
    authors = (clean_text(a.findtext(f"{ATOM}name")) for a in entry.findall(f"{ATOM}author"))
    return Paper(
        id=arxiv_id or title_key(title),
        version=version,
        title=title,
        abstract=clean_text(entry.findtext(f"{ATOM}summary")),
        authors=tuple(a for a in authors if a),
        published=parse_datetime(entry.findtext(f"{ATOM}published")),
        url=f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else _link(entry, "alternate"),
        pdf_url=f"https://arxiv.org/pdf/{arxiv_id}" if arxiv_id else _link(entry, "pdf"),
        categories=tuple(dict.fromkeys(t for t in terms if t)),
        sources=(source,),
        listed_on=listed,
    )


def _link(entry: etree._Element, kind: str) -> str | None:
    for link in entry.findall(f"{ATOM}link"):
        if kind == "pdf" and (link.get("title") == "pdf" or link.get("type") == "application/pdf"):
            return link.get("href")
        if kind == "alternate" and link.get("rel") == "alternate":
            return link.get("href")
    return None


def _int(text: str | None) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return 0


def build_query(categories: list[str], since: datetime | None = None, until: datetime | None = None) -> str:
    """``cat:A OR cat:B``, restricted to ``submittedDate`` in [since, until] when both are given."""
    cats = " OR ".join(f"cat:{c}" for c in categories)
    if since is None or until is None:
        return cats
    return f"({cats}) AND submittedDate:[{since:%Y%m%d%H%M} TO {until:%Y%m%d%H%M}]"


def _listed(page: AtomPage, day: date | None) -> list[Paper]:
    """The page's papers, listed on ``day`` if one was asked for (else as the feed dates them)."""
    return [replace(p, listed_on=day) for p in page.papers] if day else page.papers


class ArxivSource(HttpListingSource[ArxivSettings]):
    """Newest-first pages of ``search_query=cat:...`` until a paper is older than the window, or a cap.

    The window is ``lookback_days`` back from now, shortened to the previous run's newest submission
    (state ``watermark``) minus ``watermark_overlap_hours``; with ``day`` it is the ``lookback_days``
    ending with that day (UTC), and the watermark is left alone unless it grows. Requests are paced by
    ``delay_seconds`` (never under 3 s against arxiv.org). Stops after ``max_results`` papers.
    A replayed recording (``file:`` URL) is read as one page and kept whole, up to ``max_results``.

    The API names no announcement day: papers are listed on ``day`` when one is asked for, else on the
    day the feed says it was answered (``parse_atom``: today live, the recording's day replayed).
    """

    default_name = "arxiv"

    @staticmethod
    def request_interval(settings: ArxivSettings) -> float:
        return settings.delay_seconds

    def _fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        cfg = self.settings
        if not cfg.url:
            raise SourceError(self.name, "no url configured")
        if not cfg.categories:
            raise SourceError(self.name, "no categories configured")
        lookback = timedelta(days=cfg.lookback_days)
        watermark = parse_datetime(state.get("watermark"))
        until: datetime | None = None
        if day is not None:
            until = datetime.combine(day + timedelta(days=1), clock_time(0), UTC)
            since = until - lookback
            query = build_query(cfg.categories, since, until - timedelta(minutes=1))
        else:
            since = self._now() - lookback
            if watermark is not None:
                since = max(since, watermark - timedelta(hours=cfg.watermark_overlap_hours))
            query = build_query(cfg.categories)

        if self.replaying:
            papers, pages, why = self._replayed(day), 1, "replayed a recording"
        else:
            papers, pages, why = self._paged(query, since, until, day)
        log.info("%s: %d papers from %d pages (%s)", self.name, len(papers), pages, why)

        newest = [p.published for p in papers.values() if p.published is not None]
        marks = [m for m in (watermark, max(newest, default=None)) if m is not None]
        new_state = {"watermark": max(marks).isoformat()} if marks else {}
        return FetchResult(self.name, list(papers.values()), new_state)

    def _replayed(self, day: date | None) -> dict[str, Paper]:
        """A recording is one page answering one query, made before "now": its papers are the listing
        as recorded (paging on, or a window relative to today, would re-read the page or keep nothing)."""
        papers: dict[str, Paper] = {}
        page = parse_atom(self._http.get(self.settings.url).content, self.name)
        for paper in _listed(page, day):
            if len(papers) >= self.settings.max_results:
                break
            papers.setdefault(paper.id, paper)
        return papers

    def _paged(self, query: str, since: datetime, until: datetime | None,
               day: date | None) -> tuple[dict[str, Paper], int, str]:
        """Newest-first pages until a paper older than ``since`` or ``max_results``: (papers, pages, why)."""
        cfg = self.settings
        papers: dict[str, Paper] = {}
        start, pages, why = 0, 0, "end of results"
        while True:
            page = self._page(query, start)
            pages += 1
            older = False
            for paper in _listed(page, day):
                if paper.published is not None and until is not None and paper.published >= until:
                    continue
                if paper.published is not None and paper.published < since:
                    older = True
                    break
                papers.setdefault(paper.id, paper)
                if len(papers) >= cfg.max_results:
                    break
            start += page.entry_count
            if older:
                why = f"reached papers older than {since:%Y-%m-%d %H:%M} UTC"
                break
            if len(papers) >= cfg.max_results:
                why = f"reached max_results = {cfg.max_results}"
                break
            if page.entry_count == 0 or start >= page.total_results:
                break
        return papers, pages, why

    def _page(self, query: str, start: int) -> AtomPage:
        """One page; arXiv sometimes answers an in-range page with no entries, so that is retried."""
        params = {
            "search_query": query,
            "sortBy": "submittedDate",
            "sortOrder": "descending",
            "start": str(start),
            "max_results": str(self.settings.page_size),
        }
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            response = self._http.get(
                self.settings.url, params, accept="application/atom+xml", error_detail=atom_error_message
            )
            page = parse_atom(response.content, self.name)
            if page.entry_count or start >= page.total_results:
                return page
            log.warning("%s: empty page at start=%d of %d (attempt %d of %d)",
                        self.name, start, page.total_results, attempt + 1, attempts)
        raise SourceError(
            self.name,
            f"arXiv returned an empty page at start={start} of {page.total_results} results "
            f"{attempts} times",
        )
