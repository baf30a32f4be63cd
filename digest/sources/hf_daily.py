"""The Hugging Face Daily Papers JSON API source, and the parser of its entries (shared with hf_papers)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date
from typing import Any

from digest.config import HfDailySource as HfDailySettings
from digest.errors import SourceError
from digest.models import FetchResult, Paper
from digest.sources.http import HttpListingSource, conditional_validators
from digest.sources.normalize import clean_text, parse_datetime, split_arxiv_id, title_key

__all__ = [
    "HfDailySource",
    "daily_date",
    "load_entries",
    "paper_from_entry",
    "papers_from_entries",
    "parse_daily_papers",
    "with_listing_day",
]

log = logging.getLogger(__name__)


def parse_daily_papers(content: bytes, source: str = "hf_daily") -> list[Paper]:
    """The body of ``/api/daily_papers`` (a JSON array of entries) -> papers, in listing order.

    Raises SourceError for a body that is not JSON (a truncated response, an HTML error page) or
    not an array. Entries without a title are skipped; every other field is optional.
    """
    return papers_from_entries(load_entries(content, source), source)


def load_entries(content: bytes, source: str = "hf_daily") -> list[Any]:
    """The body of ``/api/daily_papers`` -> its JSON array, or SourceError saying what is wrong."""
    try:
        data = json.loads(content)
    except UnicodeDecodeError as err:
        raise SourceError(source, f"response is not UTF-8 JSON: {err.reason}") from err
    except json.JSONDecodeError as err:
        reason = f"invalid JSON ({len(content)} bytes): {err.msg} at char {err.pos}"
        raise SourceError(source, reason) from err
    if not isinstance(data, list):
        hint = f" with keys {', '.join(sorted(map(str, data))[:5])}" if isinstance(data, dict) else ""
        raise SourceError(source, f"expected a JSON array of papers, got {type(data).__name__}{hint}")
    return data


def papers_from_entries(entries: Iterable[Any], source: str) -> list[Paper]:
    """Daily-paper entries (API or page hydration data) -> papers; unusable entries are skipped."""
    papers: list[Paper] = []
    skipped = 0
    for entry in entries:
        paper = paper_from_entry(entry, source) if isinstance(entry, Mapping) else None
        if paper is None:
            skipped += 1
        else:
            papers.append(paper)
    if skipped:
        log.warning("%s: skipped %d entries without a title", source, skipped)
    return papers


def paper_from_entry(entry: Mapping[str, Any], source: str) -> Paper | None:
    """One daily-paper entry -> Paper; ``paper.*`` wins over the top-level copies of a field.

    The link is the arXiv abstract page (the HF page is derivable from the id); ``code_url`` is
    ``githubRepo``, ``project_url`` is ``projectPage``; ``listed_on`` is the day of
    ``submittedOnDailyAt`` (the daily list that carried it). None if the entry has no title.
    """
    inner = entry.get("paper")
    paper: Mapping[str, Any] = inner if isinstance(inner, Mapping) else {}

    def pick(key: str) -> Any:
        value = paper.get(key)
        return value if value not in (None, "", []) else entry.get(key)

    title = clean_text(_text(pick("title")))
    arxiv_id, version = split_arxiv_id(_text(paper.get("id")) or _text(entry.get("id")))
    if not title:
        return None
    ai_summary = clean_text(_text(pick("ai_summary"))) or None
    listed = parse_datetime(_text(paper.get("submittedOnDailyAt")))
    return Paper(
        id=arxiv_id or title_key(title),
        version=version,
        title=title,
        abstract=clean_text(_text(pick("summary"))),
        authors=_authors(pick("authors")),
        published=parse_datetime(_text(pick("publishedAt"))),
        url=f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else None,
        pdf_url=f"https://arxiv.org/pdf/{arxiv_id}" if arxiv_id else None,
        code_url=_text(pick("githubRepo")) or None,
        project_url=_text(pick("projectPage")) or None,
        upvotes=_int(pick("upvotes")),
        ai_summary=ai_summary,
        ai_keywords=tuple(k for k in (clean_text(_text(x)) for x in _list(pick("ai_keywords"))) if k),
        sources=(source,),
        listed_on=listed.date() if listed else None,
    )


def with_listing_day(papers: Iterable[Paper], day: date | None) -> list[Paper]:
    """``papers`` with ``day`` as the listing day of those whose entry named none (unchanged if None)."""
    if day is None:
        return list(papers)
    return [p if p.listed_on is not None else replace(p, listed_on=day) for p in papers]


def daily_date(entries: Iterable[Any]) -> str | None:
    """The newest ``submittedOnDailyAt`` day among entries, as YYYY-MM-DD (the source's watermark)."""
    days = []
    for entry in entries:
        inner = entry.get("paper") if isinstance(entry, Mapping) else None
        when = parse_datetime(_text(inner.get("submittedOnDailyAt"))) if isinstance(inner, Mapping) else None
        if when:
            days.append(when.date().isoformat())
    return max(days) if days else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _authors(value: Any) -> tuple[str, ...]:
    names = []
    for author in _list(value):
        name = author.get("name") if isinstance(author, Mapping) else author
        if isinstance(name, str) and (cleaned := clean_text(name)):
            names.append(cleaned)
    return tuple(names)


class HfDailySource(HttpListingSource[HfDailySettings]):
    """``GET {url}?date=YYYY-MM-DD`` (no date: the latest day); conditional on ETag/Last-Modified.

    Each paper is listed on its entry's daily date (``submittedOnDailyAt``), else on the day asked for.

    State kept between runs: ``url``, ``etag``, ``last_modified`` of the last response, and ``date``,
    the newest daily date seen.
    """

    default_name = "hf_daily"

    def _fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        if not self.settings.url:
            raise SourceError(self.name, "no url configured")
        params = {"date": day.isoformat()} if day else {}
        url = self._http.url_for(self.settings.url, params)
        etag, last_modified = conditional_validators(state, url)
        response = self._http.get(
            self.settings.url, params, etag=etag, last_modified=last_modified, accept="application/json"
        )
        if response.not_modified:
            return FetchResult(self.name, [], dict(state), not_modified=True)
        entries = load_entries(response.content, self.name)
        papers = with_listing_day(papers_from_entries(entries, self.name), day)
        new_state = response.validators
        seen = [d for d in (state.get("date"), daily_date(entries), day and day.isoformat()) if d]
        if seen:
            new_state["date"] = max(seen)
        return FetchResult(self.name, papers, new_state)

