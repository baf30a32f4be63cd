"""The learned part of the tagger: a per-topic logistic regression over rule evidence and words.

The model file (``digest/defaults/tagger_model.json.gz``, written by ``scripts/train_tagger.py`` from
the labelled papers in ``data/labels``) holds plain numbers: an idf per term, an "is this a
machine-learning paper" model, and per built-in topic a bias, weights and a calibrated threshold.
Scoring is a sparse dot product in pure Python, so loading takes a fraction of a second and nothing
heavier than ``json`` is imported.

A topic's features (``topic_features``), shared by training and tagging:
- ``ev:points`` (rule points / min_score, capped at 4, scaled to 0..1), ``ev:decisive`` (a strong or
  ordinary phrase counted), ``ev:verdict`` (the rules alone would tag it), ``ev:terms`` (distinct
  matched terms, capped), ``ev:log`` (log of the points);
- ``ml`` (probability that the paper is about machine learning) and ``ml*points``;
- the paper's tf-idf words. All of these only where the rules found some evidence; a paper without
  any is the single feature ``ev:none`` (and the tagger never gives it the topic): words decide
  whether a mention is the subject of the paper, not whether an unrelated paper is about the topic.
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digest.tagger import Tagger

__all__ = [
    "ML_CATEGORY_PREFIXES",
    "Evidence",
    "LearnedModel",
    "TopicModel",
    "evidence_features",
    "load_model",
    "sigmoid",
    "topic_features",
]

# arXiv categories that count as machine learning when the "ml" model is trained.
ML_CATEGORY_PREFIXES = ("cs.", "stat.ML", "eess.IV", "eess.AS", "eess.SP")
MODEL_FILE = "defaults/tagger_model.json.gz"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a topic's rules found in a paper: points (raw), whether a decisive phrase counted, the
    rules' own verdict, and the points per matched term."""

    points: float
    min_score: float
    decisive: bool
    verdict: bool
    tally: dict[str, float]


def evidence_row(ev: Evidence | None) -> dict[str, float]:
    if ev is None or ev.points <= 0:
        return {}
    ratio = min(ev.points / ev.min_score, 4.0)
    return {
        "ev:any": 1.0,
        "ev:points": ratio / 4.0,
        "ev:decisive": 1.0 if ev.decisive else 0.0,
        "ev:verdict": 1.0 if ev.verdict else 0.0,
        "ev:terms": min(len(ev.tally), 4) / 4.0,
        "ev:log": math.log1p(ev.points),
    }


def topic_features(ev: Evidence | dict[str, Any] | None, vector: dict[str, float], ml: float) -> dict[str, float]:
    """The feature row of one topic for one paper (see the module docstring)."""
    if isinstance(ev, dict):  # training reads evidence back from JSON-friendly dicts
        ev = Evidence(ev["points"], ev["min_score"], ev["decisive"], ev["verdict"], ev["tally"])
    row = evidence_row(ev)
    if not row:  # no rule evidence: never the topic (the tagger does not even score such papers)
        return {"ev:none": 1.0}
    row["ml"] = ml
    row["ml*points"] = ml * row["ev:points"]
    row.update(vector)
    return row


def evidence_features(tagger: Tagger, title: str, abstract: str) -> dict[str, dict[str, Any]]:
    """Rule evidence per topic as plain dicts (for training); topics without evidence are absent."""
    return {name: {"points": e.points, "min_score": e.min_score, "decisive": e.decisive,
                   "verdict": e.verdict, "tally": e.tally}
            for name, e in tagger.evidence(title, abstract).items()}


@dataclass(frozen=True, slots=True)
class TopicModel:
    bias: float
    weights: dict[str, float]
    threshold: float

    def logit(self, row: dict[str, float]) -> float:
        get = self.weights.get
        return self.bias + sum(v * get(k, 0.0) for k, v in row.items())

    def probability(self, row: dict[str, float]) -> float:
        return sigmoid(self.logit(row))

    def fast_probability(self, ev: Evidence, words_logit: float, ml: float) -> float:
        """``probability(topic_features(ev, vector, ml))`` given the words' share of the logit
        (``LearnedModel.word_logits``), without building the row (the hot path)."""
        row = evidence_row(ev)
        if not row:
            return 0.0
        row["ml"] = ml
        row["ml*points"] = ml * row["ev:points"]
        get = self.weights.get
        return sigmoid(self.bias + sum(v * get(k, 0.0) for k, v in row.items()) + words_logit)


    def contributions(self, row: dict[str, float]) -> list[tuple[str, float]]:
        """Each feature's share of the logit, largest magnitude first."""
        parts = [(k, v * self.weights.get(k, 0.0)) for k, v in row.items()]
        return sorted((p for p in parts if p[1]), key=lambda p: -abs(p[1]))


@dataclass(frozen=True, slots=True)
class LearnedModel:
    idf: dict[str, float]
    ml_bias: float
    ml_weights: dict[str, float]
    topics: dict[str, TopicModel]
    # The hot path in one lookup per word: term -> (idf, ml weight, weight per topic of topic_order).
    table: dict[str, tuple[float, ...]]
    topic_order: tuple[str, ...]
    # First words of the known bigrams: term_counts need not build any other pair.
    bigram_heads: frozenset[str]

    def ml_probability(self, vector: dict[str, float]) -> float:
        get = self.ml_weights.get
        return sigmoid(self.ml_bias + sum(v * get(k, 0.0) for k, v in vector.items()))

    def word_logits(self, counts: dict[str, int]) -> tuple[float, dict[str, float]]:
        """The ML logit and, per topic, the words' share of the topic logit, straight from the term
        counts: the same numbers as ``weighted`` + dot products, without building the vector."""
        get = self.table.get
        log = math.log
        width = len(self.topic_order) + 1
        sums = [0.0] * width
        norm2 = 0.0
        if width == 5:  # the shipped model (four topics): unrolled, the inner loop is most of the cost
            s0 = s1 = s2 = s3 = s4 = 0.0
            for term, n in counts.items():
                entry = get(term)
                if entry is not None:
                    idf, w0, w1, w2, w3, w4 = entry
                    raw = idf if n == 1 else (1.0 + log(n)) * idf
                    norm2 += raw * raw
                    s0 += raw * w0
                    s1 += raw * w1
                    s2 += raw * w2
                    s3 += raw * w3
                    s4 += raw * w4
            sums = [s0, s1, s2, s3, s4]
        else:
            for term, n in counts.items():
                entry = get(term)
                if entry is None:
                    continue
                raw = entry[0] if n == 1 else (1.0 + log(n)) * entry[0]
                norm2 += raw * raw
                for i in range(width):
                    sums[i] += raw * entry[i + 1]
        scale = 1.0 / math.sqrt(norm2) if norm2 > 0 else 0.0
        return (self.ml_bias + sums[0] * scale,
                {name: sums[i + 1] * scale for i, name in enumerate(self.topic_order)})

    def top_words(self, counts: dict[str, int], topic: str, limit: int) -> list[str]:
        """The paper's words that pushed most towards ``topic`` (from the term counts)."""
        column = self.topic_order.index(topic) + 2
        get = self.table.get
        shares = []
        for term, n in counts.items():
            entry = get(term)
            if entry is not None and entry[column] > 0:
                shares.append(((1.0 + math.log(n)) * entry[0] * entry[column], term))
        words: list[str] = []
        for _share, term in heapq.nlargest(limit, shares):
            word = term[2:] if term.startswith("t:") else term
            if word not in words:
                words.append(word)
        return words


def sigmoid(z: float) -> float:
    if z < -60:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


@cache
def load_model() -> LearnedModel:
    """The shipped model (read once per process)."""
    raw = gzip.decompress(resources.files("digest").joinpath(MODEL_FILE).read_bytes())
    data = json.loads(raw)
    topics = {name: TopicModel(t["bias"], t["w"], t["threshold"]) for name, t in data["topics"].items()}
    order = tuple(topics)
    idf: dict[str, float] = data["idf"]
    ml_weights: dict[str, float] = data["ml"]["w"]
    weights = [topics[name].weights for name in order]
    table = {term: (value, ml_weights.get(term, 0.0), *(w.get(term, 0.0) for w in weights))
             for term, value in idf.items()}
    heads = frozenset(term.split(" ", 1)[0] for term in idf if " " in term)
    return LearnedModel(idf, data["ml"]["bias"], ml_weights, topics, table, order, heads)
