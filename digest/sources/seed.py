"""The offline seed source: a saved Hugging Face papers listing (page chrome, then title / abstract pairs)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from importlib.resources.abc import Traversable
from pathlib import Path

from digest.errors import SourceError
from digest.models import FetchResult, Paper
from digest.sources.normalize import clean_text, split_arxiv_id, title_key

# Lines of the page around the listing that are not papers. Anything else that is not followed by an
# abstract is skipped too; these just make the intent explicit.
_CHROME = re.compile(
    r"^(new|subscribe|get trending papers.*|by\s*ak\b.*|daily papers|trending|"
    r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{1,2}(, \d{4})?)$",
    re.IGNORECASE,
)
_MAX_TITLE = 300
_MIN_ABSTRACT = 100


def parse_listing(text: str) -> list[Paper]:
    """Pair each title with the abstract that follows it; page chrome and stray lines are dropped.

    A title is a short single paragraph followed by a long one (the abstract); the ids are stable
    hashes of the normalised titles, so re-reading the same file yields the same papers.
    """
    paragraphs = [clean_text(p) for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    paragraphs = [p for p in paragraphs if p]
    papers: list[Paper] = []
    seen: set[str] = set()
    i = 0
    while i < len(paragraphs) - 1:
        title, abstract = paragraphs[i], paragraphs[i + 1]
        if (_CHROME.match(title) or len(title) > _MAX_TITLE or len(abstract) < _MIN_ABSTRACT
                or len(abstract) <= len(title)):
            i += 1
            continue
        arxiv_id, version = split_arxiv_id(title) if re.match(r"^\d{4}\.\d{4,5}", title) else (None, None)
        pid = arxiv_id or title_key(title)
        if pid not in seen:
            seen.add(pid)
            papers.append(Paper(id=pid, title=title, abstract=abstract, version=version, sources=("seed",)))
        i += 2
    return papers


class SeedSource:
    """Reads the listing file on every fetch; the store's merge makes a re-read add nothing new.

    The file is undated: its papers are listed on the day asked for, else (no ``listed_on``) on the
    day the store receives them."""

    def __init__(self, path: Path | Traversable, name: str = "seed") -> None:
        self.name = name
        self.path = path

    def fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise SourceError(self.name, f"seed file not found: {self.path}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise SourceError(self.name, f"cannot read {self.path}: {err}") from err
        papers = parse_listing(text)
        if not papers and text.strip():
            raise SourceError(self.name, f"{self.path}: no title/abstract pairs found")
        if day is not None:
            papers = [replace(p, listed_on=day) for p in papers]
        return FetchResult(source=self.name, papers=papers)
