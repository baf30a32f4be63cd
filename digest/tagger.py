"""Pure topic tagging: title + abstract + topic definitions -> topics, scores and evidence.

Each topic is a set of weighted phrase rules (see ``digest.topics.TopicSpec``): strong phrases decide
alone, ordinary phrases count one point per mention, weak phrases half a point and never decide alone,
title mentions count ``title_weight`` times, a mention overlapping an excluded phrase does not count,
and a vetoing phrase anywhere rules the topic out. A paper gets every topic whose evidence reaches the
topic's ``min_score``; the reported score is evidence / min_score, so 1.0 is the threshold and more is
more certain. ``digest.matching`` makes the many regular expressions fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from digest.matching import PhraseSet, lower_same_length
from digest.models import Paper, TopicAssignment
from digest.topics import TopicSpec

__all__ = ["MAX_WHY", "Tagger", "clean_text"]

# How many evidence terms a TopicAssignment carries in ``why``.
MAX_WHY = 8

# URLs and repository paths carry words ("github.com/x/subspace-rerouting") that are not prose.
_URL_HINTS = ("://", "www.", ".com/", ".org/", ".io/", ".net/", ".ai/", ".edu/")
_DOMAIN_PATH = re.compile(r"[\w.-]+\.(?:com|org|io|net|ai|edu)/", re.IGNORECASE)
# Typographic hyphens and soft hyphens would defeat "sub-?spaces?"-style patterns.
_HYPHENS = (("\u2010", "-"), ("\u2011", "-"), ("\u2012", "-"), ("\u2013", "-"), ("\u00ad", ""))
_SPACES = ("  ", "\n", "\t", "\r", "\x0b", "\x0c")


def _is_url(word: str) -> bool:
    return "://" in word or word.startswith("www.") or _DOMAIN_PATH.search(word) is not None


def clean_text(text: str) -> str:
    """Normalise text for matching: plain hyphens, no URLs, single spaces."""
    if not text:
        return ""
    ascii_only = text.isascii()
    if not ascii_only:
        for odd, plain in _HYPHENS:
            if odd in text:
                text = text.replace(odd, plain)
    if ("/" in text or "www." in text) and any(hint in text for hint in _URL_HINTS):
        words = [w for w in text.split() if not (("/" in w or "www." in w) and _is_url(w))]
        return " ".join(words)
    if not ascii_only or any(space in text for space in _SPACES):
        return " ".join(text.split())
    return text.strip()


@dataclass(frozen=True, slots=True)
class _Text:
    """A paper's title and abstract, cleaned and joined by a line break, with the lower-cased twin.

    Both are matched in one pass; a match inside the first ``title_end`` characters is in the title.
    """

    text: str
    low: str
    title_end: int


@dataclass(frozen=True, slots=True)
class _CompiledTopic:
    name: str
    spec: TopicSpec
    evidence: PhraseSet  # strong patterns, then phrases, then weak ones
    points: tuple[float, ...]  # per evidence pattern
    decisive: range  # indices of strong and ordinary phrases
    exclude: PhraseSet | None
    veto: PhraseSet | None
    # Literals of the decisive patterns: a text with none of them cannot give the topic. None when
    # some decisive pattern has no literal to look for.
    firsts: frozenset[tuple[str, bool]] | None

    def possible(self, paper: _Text, present: set[tuple[str, bool]]) -> bool:
        """Cheap check (``present`` are the first literals found in the paper): False when no strong
        or ordinary phrase can match; True promises nothing."""
        if self.firsts is not None and self.firsts.isdisjoint(present):
            return False
        return self.evidence.may_match(paper.text, paper.low, self.decisive)

    def vetoed(self, paper: _Text) -> bool:
        return self.veto is not None and bool(self.veto.find(paper.text, paper.low))

    def score(self, paper: _Text) -> tuple[float, bool, dict[str, float]]:
        """Evidence points, whether a decisive phrase counted, and the points per matched term."""
        total = 0.0
        decisive = False
        tally: dict[str, float] = {}
        matches = self.evidence.find(paper.text, paper.low)
        if not matches:
            return total, decisive, tally
        excluded = (self.exclude.find(paper.text, paper.low, overlapping=True)
                    if self.exclude is not None else [])
        title_end = paper.title_end
        for start, end, index in matches:
            if start < title_end < end or any(s < end and start < e for s, e, _ in excluded):
                continue  # a match may not run from the title into the abstract
            points = self.points[index] * (self.spec.title_weight if end <= title_end else 1.0)
            total += points
            decisive = decisive or index in self.decisive
            term = " ".join(paper.low[start:end].split())
            tally[term] = tally.get(term, 0.0) + points
        return total, decisive, tally


def _compile(name: str, spec: TopicSpec) -> _CompiledTopic:
    patterns = [*spec.strong, *spec.phrases, *spec.weak]
    points = ((spec.min_score,) * len(spec.strong) + (1.0,) * len(spec.phrases) + (0.5,) * len(spec.weak))
    evidence = PhraseSet(patterns)
    decisive = range(len(spec.strong) + len(spec.phrases))
    firsts = evidence.first_literals(decisive)
    exclude = PhraseSet(spec.exclude) if spec.exclude else None
    veto = PhraseSet(spec.veto) if spec.veto else None
    literals = None if firsts is None else frozenset(
        [(v, False) for v in firsts[0]] + [(v, True) for v in firsts[1]])
    return _CompiledTopic(name, spec, evidence, points, decisive, exclude, veto, literals)


class Tagger:
    """Tags papers with the enabled topics. Construction compiles the rules once; ``tag`` is pure.

    ``topics`` maps topic names (the config keys) to their specs; disabled topics are ignored.
    """

    def __init__(self, topics: Mapping[str, TopicSpec]) -> None:
        self._topics = [_compile(name, spec) for name, spec in topics.items() if spec.enabled]
        # Every topic's first literals, looked for once per paper.
        firsts = {lit for t in self._topics if t.firsts is not None for lit in t.firsts}
        self._lower_firsts = tuple(sorted(v for v, exact in firsts if not exact))
        self._exact_firsts = tuple(sorted(v for v, exact in firsts if exact))

    @property
    def topic_names(self) -> list[str]:
        return [t.name for t in self._topics]

    def tag(self, title: str, abstract: str) -> tuple[TopicAssignment, ...]:
        """The topics of one paper, best score first; empty when none applies.

        Each assignment's ``score`` is its evidence divided by the topic's ``min_score`` (>= 1.0 for
        every returned topic) and ``why`` lists the counted terms (lower-cased), strongest first.
        """
        title, abstract = clean_text(title), clean_text(abstract)
        text = f"{title}\n{abstract}"
        paper = _Text(text, lower_same_length(text), len(title))
        present = {(v, False) for v in self._lower_firsts if v in paper.low}
        present.update((v, True) for v in self._exact_firsts if v in paper.text)
        out: list[TopicAssignment] = []
        for topic in self._topics:
            if not topic.possible(paper, present) or topic.vetoed(paper):
                continue
            raw, decisive, tally = topic.score(paper)
            # Weak evidence only supports: without one strong or ordinary phrase there is no topic.
            if not decisive or raw + 1e-9 < topic.spec.min_score:
                continue
            why = sorted(tally, key=lambda term: -tally[term])[:MAX_WHY]
            out.append(TopicAssignment(topic.name, round(raw / topic.spec.min_score, 3), tuple(why)))
        out.sort(key=lambda a: -a.score)
        return tuple(out)

    def tag_paper(self, paper: Paper) -> Paper:
        """``paper`` with its ``topics`` replaced by this tagger's verdict."""
        return paper.with_topics(self.tag(paper.title, paper.abstract))

    def tag_many(self, papers: Iterable[Paper]) -> Iterator[Paper]:
        """``tag_paper`` over many papers, lazily, in order."""
        for paper in papers:
            yield self.tag_paper(paper)
