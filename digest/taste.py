"""A reader's taste, learned from their feedback: Rocchio over tf-idf vectors of the papers they liked and
disliked ("More like this" / "Less like this", papers of an imported library counting as liked).

Each paper becomes the tagger's sparse tf-idf vector (digest.textfeatures with the shipped model's idf,
L2-normalised); a reader's taste is the normalised mean of their liked papers' vectors and of their
disliked ones. A candidate paper's score moves by its cosine to each:

    score += LIKE_WEIGHT * cos(paper, liked) - LESS_WEIGHT * cos(paper, disliked)

so the reader's topics, keywords and authors still decide what qualifies, and the taste decides the order
among them; and a paper outside their topics (never one an exclusion removes) is admitted when it is
close to a liked paper (cosine at least ADMIT_SIMILARITY to one of them), its "why" line naming that paper:
"Because you liked: <title>". Papers the reader gave a verdict on are never offered again.

Pure: the store reads happen in digest.issues. A reader without feedback has no Taste, and selection then
runs exactly as before (digest.selection.select with ``taste=None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from digest.learned import load_model
from digest.models import Feedback, Paper, Verdict
from digest.sources.normalize import clean_text
from digest.textfeatures import dot, term_counts, weighted

__all__ = ["ADMIT_SIMILARITY", "LESS_WEIGHT", "LIKE_WEIGHT", "Taste", "build_taste", "paper_vector"]

# How far a liked or disliked resemblance moves a paper: a paper as close to the liked papers' mean as
# they are themselves (cosine ~0.3) gains about 4, more than a followed topic gives (selection.TOPIC_WEIGHT,
# 3): among what the reader's preferences qualify, taste decides the order. Tuned on the recorded days of
# tests/integration/test_feedback_learning.py (10/6 gave a theme share of 0.60, 14/6 0.68, 20/8 0.68).
LIKE_WEIGHT = 14.0
LESS_WEIGHT = 6.0
# A paper outside the reader's topics comes in when it is this close to one paper they liked.
ADMIT_SIMILARITY = 0.30
# The terms a profile keeps (the heaviest): enough to tell a theme, few enough to score fast.
PROFILE_TERMS = 400
# The latest verdicts a taste is made of: a reader with years of clicks is still read in one query.
MAX_VERDICTS = 500

Vector = dict[str, float]


@cache
def _idf() -> tuple[Mapping[str, float], frozenset[str]]:
    model = load_model()
    return model.idf, model.bigram_heads


def paper_vector(paper: Paper) -> Vector:
    """The paper's tf-idf vector (title and abstract, the tagger's vocabulary), L2-normalised."""
    idf, heads = _idf()
    return weighted(term_counts(paper.title, paper.abstract, heads), idf)


def _profile(vectors: Sequence[Vector]) -> Vector:
    """The normalised mean of ``vectors``, cut to its PROFILE_TERMS heaviest terms."""
    total: dict[str, float] = {}
    for vector in vectors:
        for term, value in vector.items():
            total[term] = total.get(term, 0.0) + value
    kept = sorted(total.items(), key=lambda item: -item[1])[:PROFILE_TERMS]
    norm = math.sqrt(sum(v * v for _, v in kept))
    return {term: v / norm for term, v in kept} if norm > 0 else {}


@dataclass(frozen=True, slots=True)
class Taste:
    """One reader's taste: what they liked (each paper's title and vector) and the two profiles."""

    liked: tuple[tuple[str, Vector], ...]
    liked_profile: Vector
    disliked_profile: Vector
    seen: frozenset[str]  # papers the reader gave a verdict on

    def bonus(self, vector: Vector) -> float:
        """What the taste adds to a candidate's score."""
        gain = LIKE_WEIGHT * dot(vector, self.liked_profile) if self.liked_profile else 0.0
        if self.disliked_profile:
            gain -= LESS_WEIGHT * dot(vector, self.disliked_profile)
        return gain

    def closest_liked(self, vector: Vector) -> tuple[float, str]:
        """(cosine, title) of the liked paper closest to ``vector``; (0, "") if none."""
        best, title = 0.0, ""
        for liked_title, liked in self.liked:
            similarity = dot(vector, liked)
            if similarity > best:
                best, title = similarity, liked_title
        return best, title


def build_taste(feedback: Sequence[Feedback], papers: Mapping[str, Paper],
                vectors: Mapping[str, Vector] | None = None) -> Taste | None:
    """The taste of a reader with these verdicts (``papers``: the stored papers they name; a verdict on a
    paper no longer stored counts for nothing); None when nothing is left to learn from. ``vectors``
    may hold the papers' vectors already made."""
    recent = list(feedback)[-MAX_VERDICTS:]
    liked: list[tuple[str, Vector]] = []
    disliked: list[Vector] = []
    for item in recent:
        paper = papers.get(item.paper_id)
        if paper is None:
            continue
        vector = vectors.get(item.paper_id) if vectors is not None else None
        if vector is None:
            vector = paper_vector(paper)
        if not vector:
            continue
        if item.verdict is Verdict.MORE:
            liked.append((clean_text(paper.title) or paper.id, vector))
        else:
            disliked.append(vector)
    seen = frozenset(item.paper_id for item in feedback)
    if not liked and not disliked:
        return Taste((), {}, {}, seen) if seen else None
    return Taste(tuple(liked), _profile([v for _, v in liked]), _profile(disliked), seen)
