"""The benchmark's readers who gave feedback: a share of them with VERDICTS verdicts each, drawn from the
benchmark's papers (half "more", half "less"), as digest.taste reads them at send time."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime

from digest.models import Feedback, Paper, Verdict
from digest.taste import Taste, Vector, build_taste, paper_vector

__all__ = ["VERDICTS", "feedback_tastes"]

VERDICTS = 50


def feedback_tastes(papers: Sequence[Paper], share: float, seed: int, now: datetime) -> Callable[[int], Taste | None]:
    """Reader number -> their taste: every ``round(1 / share)``-th reader has one (none when share is 0)."""
    if share <= 0:
        return lambda i: None
    every = max(1, round(1 / share))
    by_id = {p.id: p for p in papers}
    vectors: dict[str, Vector] = {}

    def taste(i: int) -> Taste | None:
        if i % every:
            return None
        rng = random.Random(seed * 1_000_003 + i)
        picked = rng.sample(list(papers), min(VERDICTS, len(papers)))
        for paper in picked:
            if paper.id not in vectors:
                vectors[paper.id] = paper_vector(paper)
        items = [Feedback(p.id, Verdict.MORE if k % 2 else Verdict.LESS, now) for k, p in enumerate(picked)]
        return build_taste(items, by_id, vectors)

    return taste
