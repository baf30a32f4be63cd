"""Pure selection: which papers each subscriber gets, ranked, grouped by topic, never a paper twice."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from digest.models import OTHER_SECTION, Frequency, Issue, IssueEntry, IssueSection, Paper, Subscriber

# Weights of the ranking. A followed author outranks everything (the issue promises "followed authors
# first"); among the rest, relevance to what the reader asked for leads and trend/recency break ties.
AUTHOR_BONUS = 100.0
TOPIC_WEIGHT = 3.0
KEYWORD_WEIGHT = 2.0
TREND_WEIGHT = 1.5
RECENCY_WEIGHT = 1.0
RECENCY_HALF_LIFE_DAYS = 3.0


@dataclass(frozen=True, slots=True)
class SelectionContext:
    """What selection needs to know besides the subscriber: topic labels in config order."""

    labels: Mapping[str, str]
    include_other: bool = True
    daily_window_days: int = 7


def is_due(sub: Subscriber, day: date) -> bool:
    """Daily subscribers are due every day; weekly ones on their weekday (0 = Monday)."""
    return sub.frequency is Frequency.DAILY or day.weekday() == sub.weekday


def local_issue_date(sub: Subscriber, now: datetime) -> date:
    """The date it is for this subscriber at ``now`` (UTC+13 and UTC-10 differ by a day)."""
    return now.astimezone(ZoneInfo(sub.tz)).date()


def send_time_passed(sub: Subscriber, now: datetime) -> bool:
    """True once the subscriber's local clock has reached their send time today."""
    local = now.astimezone(ZoneInfo(sub.tz))
    return local.time() >= sub.send_at


def window_start(sub: Subscriber, now: datetime, last_issue_at: datetime | None, ctx: SelectionContext) -> datetime:
    """Oldest ``first_seen`` an issue built at ``now`` may include.

    Daily: what is new since the subscriber's last issue (at most ``daily_window_days`` back, so a
    first issue is not a dump of the whole archive). Weekly: the past week.
    """
    if sub.frequency is Frequency.WEEKLY:
        return now - timedelta(days=7)
    floor = now - timedelta(days=ctx.daily_window_days)
    return max(last_issue_at, floor) if last_issue_at else floor


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()


@lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in _fold(phrase).split()]
    return re.compile(r"\b" + r"[\s\-]+".join(words) + r"\b")


def _matches(phrase: str, folded_text: str) -> bool:
    return bool(phrase.strip()) and _phrase_pattern(phrase).search(folded_text) is not None


def _author_key(name: str) -> tuple[str, str]:
    parts = re.sub(r"[^a-z\s]", " ", _fold(name)).split()
    if not parts:
        return "", ""
    return parts[-1], parts[0][:1]


def _author_match(followed: Sequence[str], authors: Sequence[str]) -> str | None:
    """The first followed author who wrote the paper, matching "Yann LeCun" with "Y. LeCun"."""
    keys = {_author_key(a): a for a in authors}
    for name in followed:
        key = _author_key(name)
        if key[0] and key in keys:
            return keys[key]
    return None


def _trend(paper: Paper) -> float:
    if not paper.upvotes:
        return 0.0
    return min(1.0, math.log1p(paper.upvotes) / math.log1p(200))


def _recency(paper: Paper, now: datetime) -> float:
    when = paper.published or paper.first_seen
    if when is None:
        return 0.5
    age_days = max(0.0, (now - when).total_seconds() / 86400)
    return 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)


def _evidence(paper: Paper, topic: str) -> tuple[str, ...]:
    return next((a.why for a in paper.topics if a.topic == topic), ())


@dataclass(frozen=True, slots=True)
class _Candidate:
    paper: Paper
    section: str
    reason: str
    score: float


def _consider(
    paper: Paper, sub: Subscriber, ctx: SelectionContext, now: datetime
) -> _Candidate | None:
    text = _fold(f"{paper.title}\n{paper.abstract}\n{' '.join(paper.ai_keywords)}")
    if any(_matches(word, text) for word in sub.exclude):
        return None
    topics = [a.topic for a in paper.topics if a.topic in ctx.labels]
    if sub.follows_everything:
        followed = topics
    else:
        followed = [name for name in sub.topics if name in topics]
    keywords = [k for k in sub.keywords if _matches(k, text)]
    author = _author_match(sub.authors, paper.authors) if sub.authors else None
    other = sub.follows_everything and not topics and ctx.include_other
    if not (followed or keywords or author or other):
        return None

    reasons: list[str] = []
    score = 0.0
    if author:
        reasons.append(f"by {author}, whom you follow")
        score += AUTHOR_BONUS
    for name in followed[:2]:
        evidence = _evidence(paper, name)
        label = ctx.labels.get(name, name)
        reasons.append(f"{label}: {', '.join(evidence[:3])}" if evidence else label)
    if followed:
        best = max(a.score for a in paper.topics if a.topic in followed)
        score += TOPIC_WEIGHT * min(1.0, best / 5.0) + 0.5 * (len(followed) - 1)
    if keywords:
        quoted = ", ".join(f"“{k}”" for k in keywords[:3])
        reasons.append(f"mentions {quoted}")
        score += KEYWORD_WEIGHT * min(2, len(keywords))
    if other and not reasons:
        reasons.append("new in your feed (no topic matched)")
    score += TREND_WEIGHT * _trend(paper) + RECENCY_WEIGHT * _recency(paper, now)

    if followed:
        section = followed[0]
    elif topics:
        section = topics[0]
    else:
        section = OTHER_SECTION
    return _Candidate(paper, section, "; ".join(reasons), round(score, 4))


def select(
    papers: Iterable[Paper],
    sub: Subscriber,
    received: set[str],
    now: datetime,
    issue_date: date,
    ctx: SelectionContext,
    since: datetime | None = None,
) -> Issue:
    """Build ``sub``'s issue for ``issue_date`` from tagged ``papers``.

    A paper qualifies through a followed topic, an include keyword or a followed author; an exclude
    keyword removes it whatever else matched; papers in ``received`` (already sent to this
    subscriber) and papers first seen before ``since`` are skipped. The best ``max_papers`` by score are
    kept and grouped by topic in the subscriber's order of topics, then any other topics in config
    order, then "other". The result may have no entries; the caller decides whether to send it.
    """
    candidates: list[_Candidate] = []
    for paper in papers:
        if paper.id in received:
            continue
        if since is not None and paper.first_seen is not None and paper.first_seen < since:
            continue
        candidate = _consider(paper, sub, ctx, now)
        if candidate is not None:
            candidates.append(candidate)
    candidates.sort(key=lambda c: (-c.score, c.paper.id))
    kept = candidates[: sub.max_papers]

    order = [*sub.topics, *(name for name in ctx.labels if name not in sub.topics), OTHER_SECTION]
    sections: list[IssueSection] = []
    for name in order:
        entries = tuple(IssueEntry(c.paper, c.reason, c.score) for c in kept if c.section == name)
        if entries:
            label = ctx.labels.get(name, "Other papers" if name == OTHER_SECTION else name)
            sections.append(IssueSection(name, label, entries))
    top = IssueEntry(kept[0].paper, kept[0].reason, kept[0].score) if kept else None
    return Issue(subscriber=sub, date=issue_date, sections=tuple(sections), top_pick=top)
