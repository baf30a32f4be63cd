"""Normalising what sources report: whitespace, arXiv ids and versions, dates, title keys."""

from __future__ import annotations

import email.utils
import hashlib
import re
import unicodedata
from datetime import UTC, datetime

_WS = re.compile(r"\s+")
# New-style ids (2403.12345, 0704.0001) and old-style (hep-th/9901001, math.GT/0309136).
_ARXIV_ID = re.compile(
    r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})(?:v(?P<version>\d+))?",
    re.IGNORECASE,
)


def clean_text(text: str | None) -> str:
    """Collapse whitespace and line breaks to single spaces; LaTeX and punctuation stay as written."""
    if not text:
        return ""
    return _WS.sub(" ", text).strip()


def split_arxiv_id(raw: str | None) -> tuple[str | None, int | None]:
    """``"http://arxiv.org/abs/2403.12345v2"`` -> ``("2403.12345", 2)``; no id found -> ``(None, None)``."""
    if not raw:
        return None, None
    match = _ARXIV_ID.search(raw.strip())
    if not match:
        return None, None
    version = match.group("version")
    return match.group("id"), int(version) if version else None


def title_key(title: str) -> str:
    """The identity of a paper that has no arXiv id: a hash of its normalised title."""
    folded = unicodedata.normalize("NFKD", title).casefold()
    letters = re.sub(r"[^0-9a-z]+", " ", folded).strip()
    return "title:" + hashlib.sha1(letters.encode()).hexdigest()[:16]


def parse_datetime(value: str | None) -> datetime | None:
    """ISO 8601 (``Z`` allowed) or RFC 2822 (RSS ``pubDate``) -> aware datetime in UTC.

    Naive values are taken as UTC; anything unparseable -> None.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
