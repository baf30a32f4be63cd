"""The Hugging Face papers listing pages (HTML) as a source: hydration JSON first, paper cards second."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from bs4 import BeautifulSoup, Tag

from digest.config import HfPapersSource as HfPapersSettings
from digest.errors import SourceError
from digest.models import FetchResult, Paper
from digest.sources.hf_daily import papers_from_entries, with_listing_day
from digest.sources.http import HttpListingSource, conditional_validators
from digest.sources.normalize import clean_text

__all__ = ["HfPapersSource", "PapersPage", "listing_url", "parse_papers_page"]

log = logging.getLogger(__name__)

_HYDRATER_CLASS = "SVELTE_HYDRATER"
_HYDRATER_TARGET = "DailyPapers"
_PAPER_HREF = re.compile(r"^(?:https?://huggingface\.co)?/papers/(\d{4}\.\d{4,5})(?:v\d+)?/?(?:[?#].*)?$")


@dataclass(frozen=True, slots=True)
class PapersPage:
    """What a listing page yielded: the papers, the listing's date if it says, and which path was used."""

    papers: list[Paper]
    date: str | None
    via: Literal["hydration", "cards"]


def parse_papers_page(content: bytes | str, source: str = "hf_papers", url: str = "") -> PapersPage:
    """A listing page -> its papers.

    Primary path: the ``<div class="SVELTE_HYDRATER" data-target="DailyPapers" data-props=...>``
    element, whose JSON carries ``dailyPapers`` entries in the API's format (full abstracts, authors,
    links). Fallback: the visible paper cards (links to ``/papers/<arXiv id>``: id, title, upvotes
    only). When the page has neither, the layout has changed: SourceError says so rather than
    reporting an empty day. A hydration list that is present but empty is a genuinely empty listing.
    """
    soup = BeautifulSoup(content, "lxml")
    props, problem = _hydration_props(soup)
    if props is not None:
        day = props.get("dateString")
        return PapersPage(
            papers_from_entries(props["dailyPapers"], source),
            day if isinstance(day, str) and day else None,
            "hydration",
        )
    where = url or "the page"
    cards = _card_papers(soup, source)
    if cards:
        log.warning("%s: %s at %s; using the %d visible paper cards (no abstracts)",
                    source, problem, where, len(cards))
        return PapersPage(cards, None, "cards")
    title = clean_text(soup.title.get_text()) if soup.title else ""
    shown = f" (page title {title[:80]!r})" if title else ""
    raise SourceError(
        source,
        f"no paper data in {where}: {problem} and no paper cards (links to /papers/<id>){shown}; "
        "the page layout may have changed",
    )


def _hydration_props(soup: BeautifulSoup) -> tuple[dict[str, Any] | None, str]:
    """(props, "") of the first hydration element whose JSON has a ``dailyPapers`` list, else (None, why)."""
    candidates = [
        tag for tag in soup.find_all(None, {"data-props": True})
        if isinstance(tag, Tag) and _HYDRATER_CLASS in (tag.get("class") or [])
    ]
    if not candidates:
        return None, f"no {_HYDRATER_CLASS} element with data-props"
    # The DailyPapers component first; other components may carry the same list on other pages.
    candidates.sort(key=lambda tag: tag.get("data-target") != _HYDRATER_TARGET)
    problem = f"no {_HYDRATER_CLASS} data-props holds a dailyPapers list"
    for tag in candidates:
        raw = tag.get("data-props")
        try:
            props = json.loads(raw if isinstance(raw, str) else "")
        except json.JSONDecodeError as err:
            problem = f"{_HYDRATER_CLASS} data-props is not valid JSON ({err.msg} at char {err.pos})"
            continue
        if isinstance(props, dict) and isinstance(props.get("dailyPapers"), list):
            return props, ""
    return None, problem


def _card_papers(soup: BeautifulSoup, source: str) -> list[Paper]:
    """Papers from links to ``/papers/<id>``: one per id, titled by its longest link text."""
    titles: dict[str, str] = {}
    upvotes: dict[str, int | None] = {}
    for link in soup.find_all("a", href=True):
        match = _PAPER_HREF.match(str(link["href"]))
        if not match:
            continue
        arxiv_id = match.group(1)
        text = clean_text(link.get_text(" "))
        if len(text) > len(titles.get(arxiv_id, "")):
            titles[arxiv_id] = text
        if upvotes.get(arxiv_id) is None:
            upvotes[arxiv_id] = _card_upvotes(link)
    return [
        Paper(
            id=arxiv_id,
            title=title,
            url=f"https://arxiv.org/abs/{arxiv_id}",
            pdf_url=f"https://arxiv.org/pdf/{arxiv_id}",
            upvotes=upvotes.get(arxiv_id),
            sources=(source,),
        )
        for arxiv_id, title in titles.items()
        if title
    ]


def _card_upvotes(link: Tag) -> int | None:
    card = link.find_parent("article")
    if card is None:
        return None
    for node in card.select(".leading-none"):
        text = node.get_text(strip=True)
        if text.isdigit():
            return int(text)
    return None


def listing_url(base: str, listing: str, day: date | None, today: date) -> str:
    """The page to read: ``{base}``, or ``{base}`` + ``/date/D``, ``/week/YYYY-Www``, ``/month/YYYY-MM``,
    ``/trending``; ``today`` stands in for a missing ``day`` in weekly and monthly listings."""
    base = base.rstrip("/")
    if listing == "trending":
        return f"{base}/trending"
    if listing == "weekly":
        year, week, _ = (day or today).isocalendar()
        return f"{base}/week/{year}-W{week:02d}"
    if listing == "monthly":
        return f"{base}/month/{(day or today):%Y-%m}"
    return f"{base}/date/{day.isoformat()}" if day else base


class HfPapersSource(HttpListingSource[HfPapersSettings]):
    """Reads one HF papers listing page per fetch, conditional on ETag/Last-Modified.

    Each paper is listed on its entry's daily date, else the date the page names, else (a daily
    listing) the day asked for. State kept between runs: ``url``, ``etag``, ``last_modified``, and
    ``date`` (the listing's date).
    """

    default_name = "hf_papers"

    def _fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        if not self.settings.url:
            raise SourceError(self.name, "no url configured")
        page_url = listing_url(self.settings.url, self.settings.listing, day, self._now().date())
        url = self._http.url_for(page_url)
        etag, last_modified = conditional_validators(state, url)
        response = self._http.get(url, etag=etag, last_modified=last_modified, accept="text/html")
        if response.not_modified:
            return FetchResult(self.name, [], dict(state), not_modified=True)
        page = parse_papers_page(response.content, self.name, url)
        new_state = response.validators
        if page.date:
            new_state["date"] = page.date
        named = _day(page.date) or (day if self.settings.listing == "daily" else None)
        return FetchResult(self.name, with_listing_day(page.papers, named), new_state)


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None
