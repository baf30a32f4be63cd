"""Pure selection: which papers each subscriber gets, ranked, grouped by topic, never a paper twice."""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from digest.keywords import fold, keyword_matches
from digest.models import (
    OTHER_SECTION,
    Frequency,
    Issue,
    IssueEntry,
    IssueSection,
    Paper,
    Subscriber,
    rank_order,
    section_label,
)
from digest.taste import ADMIT_SIMILARITY, Taste, Vector, paper_vector
from digest.textfeatures import dot

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


# Keywords and exclusions match the way people write them (inflections, "-" = " ", "agent*"): see
# digest.keywords.
_fold = fold
_matches = keyword_matches


@lru_cache(maxsize=65536)  # the same authors come up for reader after reader
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
    decay: float = 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)  # typeshed: float ** float may be complex
    return decay


def _evidence(paper: Paper, topic: str) -> tuple[str, ...]:
    return next((a.why for a in paper.topics if a.topic == topic), ())


@dataclass(frozen=True, slots=True)
class _Candidate:
    paper: Paper
    section: str
    reason: str
    score: float


class Pool:
    """Papers prepared once for many selections: a send builds thousands of issues from the same few
    hundred papers. Each paper's text is folded once, each phrase (keyword, exclusion) is matched
    against every paper once, papers are indexed by topic and author so a reader's preferences are
    weighed only against the papers they can qualify, and the ranked candidates of one set of
    preferences are kept for the next reader with the same ones (the last ``remember``). ``select`` gives the
    same issue from a Pool as from the plain papers. Not locked: threads sharing one may at worst
    compute an entry twice.
    """

    def __init__(self, papers: Iterable[Paper], ctx: SelectionContext, remember: int = 512) -> None:
        self.papers: tuple[Paper, ...] = tuple(papers)
        self.ctx = ctx
        self._remember = remember
        self._texts: list[str | None] = [None] * len(self.papers)
        self._hits: dict[str, frozenset[int]] = {}
        self._ranked: OrderedDict[tuple[object, ...], tuple[_Candidate, ...]] = OrderedDict()
        self._by_topic: dict[str, set[int]] | None = None
        self._by_author: dict[tuple[str, str], set[int]] | None = None
        # tf-idf vectors, made on first use: a send where no reader gave feedback never makes one.
        self._vectors: list[Vector | None] = [None] * len(self.papers)
        self._index: dict[str, int] | None = None

    def vector(self, index: int) -> Vector:
        vector = self._vectors[index]
        if vector is None:
            vector = self._vectors[index] = paper_vector(self.papers[index])
        return vector

    def vector_of(self, paper: Paper) -> Vector:
        if self._index is None:
            self._index = {p.id: i for i, p in enumerate(self.papers)}
        index = self._index.get(paper.id)
        return self.vector(index) if index is not None else paper_vector(paper)

    def excluded(self, sub: Subscriber) -> frozenset[int]:
        """Indexes of the papers an exclusion of ``sub``'s removes."""
        return frozenset().union(*(self._matching(word) for word in sub.exclude))

    def _qualifiable(self, sub: Subscriber, keyword_hits: list[tuple[str, frozenset[int]]]) -> Iterable[int]:
        """Indexes of the papers that ``sub``'s topics, keywords or authors can qualify (all of them for
        a reader who follows everything), in order: any other paper _consider would turn down."""
        if sub.follows_everything:
            return range(len(self.papers))
        if self._by_topic is None or self._by_author is None:
            self._by_topic, self._by_author = {}, {}
            for index, paper in enumerate(self.papers):
                for a in paper.topics:
                    if a.topic in self.ctx.labels:
                        self._by_topic.setdefault(a.topic, set()).add(index)
                for author in paper.authors:
                    self._by_author.setdefault(_author_key(author), set()).add(index)
        wanted: set[int] = set()
        for name in sub.topics:
            wanted.update(self._by_topic.get(name, ()))
        for _, hits in keyword_hits:
            wanted.update(hits)
        for name in sub.authors:
            key = _author_key(name)
            if key[0]:
                wanted.update(self._by_author.get(key, ()))
        return sorted(wanted)

    def _text(self, index: int) -> str:
        text = self._texts[index]
        if text is None:
            paper = self.papers[index]
            text = self._texts[index] = _fold(f"{paper.title}\n{paper.abstract}\n{' '.join(paper.ai_keywords)}")
        return text

    def _matching(self, phrase: str) -> frozenset[int]:
        """Indexes of the papers whose text holds ``phrase`` (as a whole-word phrase)."""
        hits = self._hits.get(phrase)
        if hits is None:
            hits = self._hits[phrase] = frozenset(
                i for i in range(len(self.papers)) if _matches(phrase, self._text(i)))
        return hits

    def ranked(self, sub: Subscriber, now: datetime) -> tuple[_Candidate, ...]:
        """Every paper ``sub``'s preferences qualify, best first (ties by paper id)."""
        key = (sub.topics, sub.keywords, sub.exclude, sub.authors, now)
        found = self._ranked.get(key)
        if found is not None:
            self._ranked.move_to_end(key)
            return found
        excluded = self.excluded(sub)
        keyword_hits = [(k, self._matching(k)) for k in sub.keywords]
        candidates = []
        for index in self._qualifiable(sub, keyword_hits):
            if index in excluded:
                continue
            keywords = [k for k, hits in keyword_hits if index in hits]
            candidate = _consider(self.papers[index], sub, self.ctx, now, keywords)
            if candidate is not None:
                candidates.append(candidate)
        candidates.sort(key=lambda c: rank_order(c.score, c.paper.id))
        found = self._ranked[key] = tuple(candidates)
        if len(self._ranked) > self._remember:
            self._ranked.popitem(last=False)
        return found


def _consider(
    paper: Paper, sub: Subscriber, ctx: SelectionContext, now: datetime, keywords: list[str]
) -> _Candidate | None:
    """``paper`` as a candidate for ``sub`` (None if nothing qualifies it); ``keywords`` are the
    reader's keywords its text holds, exclusions already applied."""
    topics = [a.topic for a in paper.topics if a.topic in ctx.labels]
    if sub.follows_everything:
        followed = topics
    else:
        followed = [name for name in sub.topics if name in topics]
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
    papers: Iterable[Paper] | Pool,
    sub: Subscriber,
    received: set[str],
    now: datetime,
    issue_date: date,
    ctx: SelectionContext,
    since: datetime | None = None,
    taste: Taste | None = None,
) -> Issue:
    """Build ``sub``'s issue for ``issue_date`` from tagged ``papers`` (a list, or a Pool of them
    prepared for many readers; the Pool's context is used then).

    A paper qualifies through a followed topic, an include keyword or a followed author; an exclude
    keyword removes it whatever else matched; papers in ``received`` (already sent to this
    subscriber) and papers first seen before ``since`` are skipped. The best ``max_papers`` by score are
    kept and grouped by topic in the subscriber's order of topics, then any other topics in config
    order, then "other". The result may have no entries; the caller decides whether to send it.

    ``taste`` (digest.taste, from the reader's feedback) re-ranks the candidates and may admit a paper
    their preferences do not qualify (never one an exclusion removes); papers they gave a verdict on are
    left out. Without it the issue is exactly what it was before feedback existed.
    """
    pool = papers if isinstance(papers, Pool) else Pool(papers, ctx)
    ctx = pool.ctx
    kept: list[_Candidate] = []
    if sub.max_papers > 0:
        ranked = pool.ranked(sub, now) if taste is None else _with_taste(pool, sub, now, taste)
        for candidate in ranked:
            paper = candidate.paper
            if paper.id in received:
                continue
            if since is not None and paper.first_seen is not None and paper.first_seen < since:
                continue
            kept.append(candidate)
            if len(kept) >= sub.max_papers:
                break

    order = [*sub.topics, *(name for name in ctx.labels if name not in sub.topics), OTHER_SECTION]
    sections: list[IssueSection] = []
    for name in order:
        entries = tuple(IssueEntry(c.paper, c.reason, c.score) for c in kept if c.section == name)
        if entries:
            label = section_label(name, ctx.labels)
            sections.append(IssueSection(name, label, entries))
    top = IssueEntry(kept[0].paper, kept[0].reason, kept[0].score) if kept else None
    return Issue(subscriber=sub, date=issue_date, sections=tuple(sections), top_pick=top)


def _with_taste(pool: Pool, sub: Subscriber, now: datetime, taste: Taste) -> list[_Candidate]:
    """``sub``'s candidates re-scored by their taste, with papers outside their preferences that closely
    resemble one they liked, best first; papers they gave a verdict on left out."""
    out: list[_Candidate] = []
    present: set[str] = set()
    for candidate in pool.ranked(sub, now):
        paper = candidate.paper
        present.add(paper.id)
        if paper.id in taste.seen:
            continue
        bonus = taste.bonus(pool.vector_of(paper))
        out.append(_Candidate(paper, candidate.section, candidate.reason, round(candidate.score + bonus, 4)))
    if taste.liked:
        excluded = pool.excluded(sub)
        # Cheap first: a paper close to one liked paper is at least somewhat close to their mean.
        floor = ADMIT_SIMILARITY / 2
        for index, paper in enumerate(pool.papers):
            if paper.id in present or paper.id in taste.seen or index in excluded:
                continue
            vector = pool.vector(index)
            if dot(vector, taste.liked_profile) < floor:
                continue
            similarity, title = taste.closest_liked(vector)
            if similarity < ADMIT_SIMILARITY:
                continue
            topics = [a.topic for a in paper.topics if a.topic in pool.ctx.labels]
            score = TREND_WEIGHT * _trend(paper) + RECENCY_WEIGHT * _recency(paper, now) + taste.bonus(vector)
            out.append(_Candidate(paper, topics[0] if topics else OTHER_SECTION, f"Because you liked: {title}",
                                  round(score, 4)))
    out.sort(key=lambda c: rank_order(c.score, c.paper.id))
    return out
