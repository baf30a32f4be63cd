"""Topics defined in words: a description and up to five example papers, no patterns.

The topic becomes the centroid of the tf-idf vectors (digest.textfeatures, the shipped idf) of its
description and examples; a paper's score is its cosine similarity to that centroid. The threshold
is calibrated from two sides, so a reader never picks a number:
- the example side: 0.6 x the median leave-one-out similarity of the examples to the others, so
  a topic whose examples are close together asks papers to be close too;
- the generic side, against ordinary listing papers (a sample of the recorded listings ships as
  ``defaults/generic_papers.jsonl.gz``): the share p of them that pass the example side estimates
  how common the topic is, and at most max(1%, 0.3 p) of them may pass the threshold -- a rare
  topic keeps to the top 1% of ordinary papers, a common one (diffusion, agents) is not starved.
The higher of the two wins. The constants were chosen on the built-in topics posed as described
topics; measured on a held-out "quantization" topic: see data/labels/README.md.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from digest.errors import UsageError
from digest.textfeatures import dot, term_counts, weighted
from digest.topics import TopicExample, TopicSpec

__all__ = ["DescribedTopic", "ExampleLookup", "generic_vectors"]

GENERIC_FILE = "defaults/generic_papers.jsonl.gz"
# The share of the examples' typical similarity a paper must reach, the least share of generic papers
# allowed above the threshold, and the part of the estimated prevalence allowed (module docstring).
EXAMPLE_SHARE = 0.6
GENERIC_FLOOR = 0.01
PREVALENCE_PART = 0.3

# Looks an arXiv id up (in the store): (title, abstract) or None when unknown.
ExampleLookup = Callable[[str], "tuple[str, str] | None"]

log = logging.getLogger(__name__)

# "arXiv:2401.01234v2", "https://arxiv.org/abs/2401.01234v2" -> "2401.01234" (also old-style ids).
_ARXIV_ID = re.compile(r"(?:arxiv\.org/(?:abs|pdf)/|arxiv:)?([a-z-]+(?:\.[a-z]{2})?/\d{7}|\d{4}\.\d{4,5})(?:v\d+)?",
                       re.IGNORECASE)


def _centroid(vectors: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for vector in vectors:
        for term, value in vector.items():
            total[term] = total.get(term, 0.0) + value
    norm = math.sqrt(sum(v * v for v in total.values()))
    return {t: v / norm for t, v in total.items()} if norm else total


@cache
def _generic_texts() -> tuple[tuple[str, str], ...]:
    raw = gzip.decompress(resources.files("digest").joinpath(GENERIC_FILE).read_bytes()).decode("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return tuple((r["title"], r.get("abstract", "")) for r in rows)


def generic_vectors(idf: Mapping[str, float]) -> list[dict[str, float]]:
    """The shipped generic papers as vectors over ``idf`` (computed once per idf object)."""
    key = id(idf)
    cached = _VECTORS.get(key)
    if cached is None or cached[0] is not idf:
        cached = _VECTORS[key] = (idf, [weighted(term_counts(t, a), idf) for t, a in _generic_texts()])
    return cached[1]


_VECTORS: dict[int, tuple[Mapping[str, float], list[dict[str, float]]]] = {}


@dataclass(frozen=True, slots=True)
class DescribedTopic:
    """A topic decided by similarity to its description and examples (see the module docstring)."""

    name: str
    centroid: dict[str, float]
    threshold: float

    @classmethod
    def build(cls, name: str, spec: TopicSpec, idf: Mapping[str, float],
              lookup: ExampleLookup | None = None) -> DescribedTopic:
        """An example id that ``lookup`` does not know is left out with a warning (the store may not
        have fetched it yet: a topic must not stop a run for that); raises UsageError when nothing
        with known words is left."""
        found = [_example_text(name, ex, lookup) for ex in spec.examples]
        texts = [text for text in found if text is not None]
        vectors = [weighted(term_counts(title, abstract), idf) for title, abstract in texts]
        if spec.description.strip():
            vectors.append(weighted(term_counts(spec.label, spec.description), idf))
        vectors = [v for v in vectors if v]
        if not vectors:
            if found and not texts:
                raise UsageError(f"topic {name!r}: none of its examples is in the store and its description has "
                                 "no known words (fetch the days that list them, or give { title, abstract })")
            raise UsageError(f"topic {name!r}: its description and examples have no known words")
        centroid = _centroid(vectors)
        if len(vectors) > 1:
            loo = [dot(v, _centroid(vectors[:i] + vectors[i + 1:])) for i, v in enumerate(vectors)]
            example_bar = EXAMPLE_SHARE * statistics.median(loo)
        else:
            example_bar = 0.0
        generic = sorted(dot(v, centroid) for v in generic_vectors(idf))
        generic_bar = 0.0
        if generic:
            prevalence = sum(1 for s in generic if s >= example_bar) / len(generic)
            allowed = max(GENERIC_FLOOR, PREVALENCE_PART * prevalence)
            generic_bar = generic[min(len(generic) - 1, int((1.0 - allowed) * len(generic)))]
        return cls(name, centroid, round(max(generic_bar, example_bar, 1e-6), 4))

    def similarity(self, vector: Mapping[str, float]) -> float:
        return dot(vector, self.centroid)

    def why(self, vector: Mapping[str, float], limit: int) -> tuple[str, ...]:
        """The shared terms that add most to the similarity."""
        shared = sorted(((v * self.centroid[t], t) for t, v in vector.items() if t in self.centroid), reverse=True)
        words = []
        for _, term in shared:
            word = term[2:] if term.startswith("t:") else term
            if word not in words:
                words.append(word)
            if len(words) == limit:
                break
        return tuple(words)


def example_id(example: str) -> str:
    """The bare arXiv id of an example written as an id, ``arXiv:`` id or abs/pdf URL, version dropped."""
    match = _ARXIV_ID.search(example.strip())
    return match.group(1) if match else example.strip()


def _example_text(name: str, example: str | TopicExample, lookup: ExampleLookup | None) -> tuple[str, str] | None:
    if not isinstance(example, str):
        return example.title, example.abstract
    found = None
    if lookup is not None:
        found = lookup(example.strip()) or lookup(example_id(example))
    if found is None:
        log.warning("topic %r: example %s is not in the store; it is left out until it is (fetch the day "
                    "that lists it, or give { title = \"...\", abstract = \"...\" })", name, example)
    return found
