"""A Pool shared by many readers selects exactly what a fresh list of the same papers selects."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from digest.config import Settings
from digest.models import Subscriber
from digest.selection import Pool, SelectionContext, select
from digest.tagger import Tagger
from tests.samples import KEYWORDS, make_papers, make_subscriber

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def test_a_shared_pool_gives_every_reader_the_issue_a_plain_list_gives() -> None:
    settings = Settings()
    tagger = Tagger(settings.enabled_topics)
    papers = [tagger.tag_paper(p) for p in make_papers(120)]
    ctx = SelectionContext(labels={name: spec.label for name, spec in settings.enabled_topics.items()})
    pool = Pool(papers, ctx, remember=8)  # a small memory: entries are dropped and built again
    authors = sorted({a for p in papers for a in p.authors[:2]})
    rng = random.Random(5)
    checked = 0
    seen_kinds: set[tuple[bool, bool, bool, bool]] = set()
    for i in range(400):
        sub = make_subscriber(i, list(ctx.labels), authors, seed=11)
        received = {p.id for p in rng.sample(papers, rng.randint(0, 15))}
        since = NOW - timedelta(hours=rng.choice([6, 24, 200]))
        expected = select(list(papers), sub, received, NOW, NOW.date(), ctx, since=since)
        got = select(pool, sub, received, NOW, NOW.date(), ctx, since=since)
        assert got == expected, sub
        checked += got.count
        seen_kinds.add((bool(sub.topics), bool(sub.keywords), bool(sub.authors), bool(sub.exclude)))
    assert checked > 1000 and len(seen_kinds) >= 5  # the readers were of every kind and got real issues


def test_phrases_are_matched_as_the_plain_selection_matches_them() -> None:
    settings = Settings()
    papers = make_papers(60)
    ctx = SelectionContext(labels={name: spec.label for name, spec in settings.enabled_topics.items()})
    pool = Pool(papers, ctx)
    for word in KEYWORDS:
        sub = Subscriber(email="r@example.org", keywords=(word,), max_papers=200)
        assert select(pool, sub, set(), NOW, NOW.date(), ctx) == select(papers, sub, set(), NOW, NOW.date(), ctx)
