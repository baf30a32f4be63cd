"""Bag-of-words features of a paper for the learned part of the tagger, in pure Python.

A paper becomes a sparse vector: lower-cased word unigrams and adjacent-word bigrams of the title and
abstract, title words once more with a ``t:`` prefix (a title says what a paper is mainly about),
light plural folding ("networks" = "network"), sublinear term frequency (1 + log tf) times the
inverse document frequency learned from the labelled papers, L2-normalised. The same function builds
the training matrix (``scripts/train_tagger.py``) and scores papers at run time, so the two can never
drift apart. Nothing here imports numpy or scikit-learn: tagging stays fast to start and to run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from itertools import pairwise

__all__ = ["dot", "normalise_word", "term_counts", "tokens", "weighted"]

# Words: letters then letters/digits ("dit", "3d" is dropped, "llama2" kept); hyphenated words are
# split, so "low-rank" and "low rank" give the same tokens.
_WORD = re.compile(r"[a-z][a-z0-9]*")
# Words too common to say anything about a topic; dropping them keeps the vectors short (and fast).
_STOP = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "been", "by", "can", "for", "from", "has", "have",
    "in", "into", "is", "it", "its", "of", "on", "or", "our", "that", "the", "their", "these",
    "this", "those", "to", "was", "we", "were", "which", "while", "with", "without", "via", "than",
    "then", "also", "such", "both", "each", "more", "most", "other", "some", "only", "over",
    "under", "between", "through", "using", "based", "show", "shows", "shown", "propose",
    "proposed", "present", "presents", "paper", "work", "approach", "method", "methods", "results",
    "new", "novel", "study", "however", "moreover", "furthermore", "existing", "further", "across",
    "within", "well", "while", "achieve", "achieves", "achieving", "significantly", "specifically",
))


def normalise_word(word: str) -> str:
    """Fold simple English plurals: "networks" -> "network", "subspaces" -> "subspace",
    "strategies" -> "strategy"; short words and "-ss"/"-us"/"-is" endings are kept."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1]


# Word -> folded word ("" for a stop word), remembered: the same few thousand words come back in every
# abstract, and this lookup is most of the cost of tagging with the learned model.
_FOLDED: dict[str, str] = {}
_FOLDED_MAX = 200_000


def _fold(word: str) -> str:
    folded = _FOLDED.get(word)
    if folded is None:
        folded = "" if word in _STOP else normalise_word(word)
        if len(_FOLDED) < _FOLDED_MAX:
            _FOLDED[word] = folded
    return folded


def tokens(text: str) -> list[str]:
    """Lower-cased, plural-folded words of ``text`` without stop words."""
    folded = (_FOLDED.get(w) or _fold(w) for w in _WORD.findall(text.lower()))
    return [w for w in folded if w]


def term_counts(title: str, abstract: str, bigram_heads: AbstractSet[str] | None = None) -> dict[str, int]:
    """Unigram and bigram counts of title + abstract, plus ``t:``-prefixed title unigrams.

    ``bigram_heads`` (the first words of a model's known bigrams) skips pairs the model cannot know:
    a speed-up that changes no weighted vector over that model's vocabulary."""
    title_words = tokens(title)
    words = [*title_words, "", *tokens(abstract)]  # "" keeps bigrams from spanning title and abstract
    counts: dict[str, int] = {}
    get = counts.get
    for word in words:
        if word:
            counts[word] = get(word, 0) + 1
    for first, second in pairwise(words):
        if first and second and (bigram_heads is None or first in bigram_heads):
            pair = first + " " + second
            counts[pair] = get(pair, 0) + 1
    for word in title_words:
        key = "t:" + word
        counts[key] = get(key, 0) + 1
    return counts


def weighted(counts: Mapping[str, int], idf: Mapping[str, float]) -> dict[str, float]:
    """Sublinear tf-idf over the known vocabulary, L2-normalised (terms outside ``idf`` are dropped)."""
    log = math.log
    get = idf.get
    vector: dict[str, float] = {}
    for term, n in counts.items():
        weight = get(term)
        if weight is not None:
            vector[term] = weight if n == 1 else (1.0 + log(n)) * weight
    norm = math.sqrt(sum(v * v for v in vector.values()))
    if norm > 0:
        scale = 1.0 / norm
        return {term: v * scale for term, v in vector.items()}
    return vector


def dot(vector: Mapping[str, float], coefficients: Mapping[str, float]) -> float:
    """Sparse dot product (iterating the shorter mapping)."""
    if len(vector) > len(coefficients):
        vector, coefficients = coefficients, vector
    return sum(v * coefficients.get(k, 0.0) for k, v in vector.items())
