"""How a reader's keyword (or exclusion) matches a paper's text: the way people write, not regexes.

- Case, accents and hyphens do not matter: ``low-rank`` matches "low rank", "Low-Rank", "low–rank".
- Simple inflections match: ``agent`` matches "agents", ``prune`` matches "pruned" and "pruning",
  ``model`` matches "models", ``strategy`` matches "strategies"; a plural keyword (``agents``) matches
  the singular too. Every word of a phrase is inflected (``neural network`` matches "neural networks").
- A trailing ``*`` matches any ending: ``agent*`` matches "agentic", ``quantiz*`` "quantization".
- Words match whole: ``rank`` never matches inside "frank" or "crank".

``fold`` is applied to both sides (text once per paper, keywords once per phrase), and
``keyword_pattern`` is cached because thousands of readers share a few hundred keywords.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["fold", "keyword_matches", "keyword_pattern"]

_VOWELS = frozenset("aeiou")
# Words shorter than this (acronyms such as "moe", "nas", "rl") only take a plural "s".
_MIN_INFLECTED = 4


# Typographic dashes become plain hyphens before accents are dropped (which would drop them too).
_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"})


def fold(text: str) -> str:
    """Lower-case ASCII: accents dropped, so "Schrödinger" and "Schrodinger" meet; dashes become "-"."""
    return unicodedata.normalize("NFKD", text.translate(_DASHES)).encode("ascii", "ignore").decode().casefold()


def _word_pattern(word: str) -> str:
    """A regex for one folded keyword word and its simple inflections (or its prefix with ``*``)."""
    if word.endswith("*"):
        stem = word.rstrip("*")
        return re.escape(stem) + r"\w*" if stem else r"\w+"
    if not word.isalpha():
        return re.escape(word)
    if len(word) < _MIN_INFLECTED:
        return re.escape(word) + "s?"
    if word.endswith("ies"):  # "strategies" -> strategy, strategies
        return re.escape(word[:-3]) + "(?:y|ies|ied|ying)"
    if word.endswith(("sses", "ches", "shes", "xes")):  # "processes", "searches"
        return re.escape(word[:-2]) + "(?:es|ed|ing)?"
    if word.endswith("ss"):  # "process", "loss"
        return re.escape(word) + "(?:es|ed|ing)?"
    if word.endswith("s") and not word.endswith(("us", "is")):  # "agents" -> agent, agents
        return _word_pattern(word[:-1])
    for ending in ("ing", "ed"):  # "pruning" -> prune, pruned; "planning" -> plan, planned
        stem = word[: -len(ending)]
        if word.endswith(ending) and len(stem) >= _MIN_INFLECTED and not stem.endswith("e"):
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS and stem[-1] not in "ls":
                stem = stem[:-1]
            last = re.escape(stem[-1])
            return re.escape(stem) + f"(?:e|es|s|ed|ing|er|ers|{last}ed|{last}ing|{last}er|{last}ers)?"
    if word.endswith("y") and word[-2] not in _VOWELS:  # "strategy", "apply"
        return re.escape(word[:-1]) + "(?:y|ies|ied|ying)"
    if word.endswith("e") and not word.endswith("ee"):  # "prune" -> pruned, pruning, prunes
        return re.escape(word[:-1]) + "(?:e|es|ed|ing|er|ers)"
    last = re.escape(word[-1])
    # "plan" -> planned/planning (doubled consonant), "model" -> models/modeled/modelling.
    return re.escape(word) + f"(?:s|es|ed|ing|er|ers|{last}ed|{last}ing|{last}er|{last}ers)?"


@lru_cache(maxsize=4096)
def keyword_pattern(phrase: str) -> re.Pattern[str] | None:
    """The compiled pattern of a keyword phrase; None for a phrase with no words."""
    words = [w for w in re.split(r"[\s\-]+", fold(phrase).strip()) if w.strip("*")]
    if not words:
        return None
    body = r"[\s\-]+".join(_word_pattern(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)")


def keyword_matches(phrase: str, folded_text: str) -> bool:
    """Whether ``phrase`` occurs in ``folded_text`` (already passed through ``fold``)."""
    pattern = keyword_pattern(phrase)
    return pattern is not None and pattern.search(folded_text) is not None
