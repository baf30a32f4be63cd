"""Pure topic tagging: title + abstract + topic definitions -> topics, scores and evidence.

Three kinds of topic share one pass over a paper:
- rule topics (patterns only): the rules decide, as described below;
- built-in topics with a learned model (digest.learned, trained on the labelled papers in
  data/labels): the rules' evidence and the paper's words go through a per-topic logistic regression
  with a calibrated threshold; the rules alone decide nothing, but a paper without any rule evidence
  for the topic never gets it;
- topics defined in words (description + examples, no patterns; digest.described): similarity.
The reported score is always "how far past the threshold": >= 1.0 for every assigned topic.

Each rule topic is a set of weighted phrase rules (see ``digest.topics.TopicSpec``): strong phrases decide
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

from digest.described import DescribedTopic, ExampleLookup
from digest.learned import Evidence, LearnedModel, TopicModel, load_model, sigmoid, topic_features
from digest.matching import PhraseSet, lower_same_length
from digest.models import Paper, TopicAssignment
from digest.textfeatures import term_counts, weighted
from digest.topics import TopicSpec

__all__ = ["MAX_WHY", "Tagger", "TopicVerdict", "clean_text"]

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


@dataclass(frozen=True, slots=True)
class TopicVerdict:
    """Why a paper got, or missed, one topic (``digest tag --explain``)."""

    topic: str
    kind: str  # "rules", "learned" or "described"
    assigned: bool
    score: float  # the probability, similarity or rule points / min_score
    threshold: float
    rule_points: float
    rule_terms: tuple[str, ...]
    for_terms: tuple[str, ...]  # words that pushed towards the topic
    against_terms: tuple[str, ...]  # words that pushed away from it
    note: str = ""


class Tagger:
    """Tags papers with the enabled topics. Construction compiles the rules once; ``tag`` is pure.

    ``topics`` maps topic names (the config keys) to their specs; disabled topics are ignored.
    ``learned=False`` uses the rules alone for every topic (the built-ins' learned model is
    otherwise applied to the topics it was trained for). ``examples`` looks up example arXiv ids of
    topics defined in words (the store); without it only inline examples can be used.
    """

    def __init__(self, topics: Mapping[str, TopicSpec], learned: bool = True,
                 examples: ExampleLookup | None = None) -> None:
        enabled = {name: spec for name, spec in topics.items() if spec.enabled}
        self._topics = [_compile(name, spec) for name, spec in enabled.items() if spec.has_patterns]
        # Every topic's first literals, looked for once per paper.
        firsts = {lit for t in self._topics if t.firsts is not None for lit in t.firsts}
        self._lower_firsts = tuple(sorted(v for v, exact in firsts if not exact))
        self._exact_firsts = tuple(sorted(v for v, exact in firsts if exact))
        described = [name for name, spec in enabled.items() if not spec.has_patterns]
        self._model: LearnedModel | None = load_model() if (learned and self._topics) or described else None
        model_topics = self._model.topics if (self._model is not None and learned) else {}
        self._learned: dict[str, TopicModel] = {t.name: model_topics[t.name] for t in self._topics
                                                if t.name in model_topics}
        self._described = [DescribedTopic.build(name, enabled[name], self._model.idf, examples)
                           for name in described] if self._model is not None else []
        self._names = [name for name in enabled]

    @property
    def topic_names(self) -> list[str]:
        return list(self._names)

    def _paper(self, title: str, abstract: str) -> tuple[_Text, set[tuple[str, bool]]]:
        title, abstract = clean_text(title), clean_text(abstract)
        text = f"{title}\n{abstract}"
        paper = _Text(text, lower_same_length(text), len(title))
        present = {(v, False) for v in self._lower_firsts if v in paper.low}
        present.update((v, True) for v in self._exact_firsts if v in paper.text)
        return paper, present

    def _evidence(self, paper: _Text, present: set[tuple[str, bool]]) -> dict[str, Evidence]:
        found: dict[str, Evidence] = {}
        for topic in self._topics:
            if not topic.possible(paper, present) or topic.vetoed(paper):
                continue
            raw, decisive, tally = topic.score(paper)
            if raw <= 0:
                continue
            verdict = decisive and raw + 1e-9 >= topic.spec.min_score
            found[topic.name] = Evidence(raw, topic.spec.min_score, decisive, verdict, tally)
        return found

    def evidence(self, title: str, abstract: str) -> dict[str, Evidence]:
        """What the rules of each topic found in this paper (topics with nothing found are absent)."""
        return self._evidence(*self._paper(title, abstract))

    def tag(self, title: str, abstract: str) -> tuple[TopicAssignment, ...]:
        """The topics of one paper, best score first; empty when none applies.

        Each assignment's ``score`` is how far past its threshold the paper is (>= 1.0) and ``why``
        lists the evidence terms (lower-cased), strongest first.
        """
        paper, present = self._paper(title, abstract)
        found = self._evidence(paper, present)
        out: list[TopicAssignment] = []
        learned_found = any(name in self._learned for name in found)
        counts: dict[str, int] = {}
        vector: dict[str, float] = {}
        ml = 0.0
        word_logits: dict[str, float] = {}
        model_data = self._model
        if model_data is not None and (learned_found or self._described):
            counts = term_counts(title, abstract, None if self._described else model_data.bigram_heads)
            if learned_found:
                ml_logit, word_logits = model_data.word_logits(counts)
                ml = sigmoid(ml_logit)
            if self._described:
                vector = weighted(counts, model_data.idf)
        for name, ev in found.items():
            model = self._learned.get(name)
            if model is None:
                if ev.verdict:
                    out.append(TopicAssignment(name, round(ev.points / ev.min_score, 3), _top_terms(ev.tally)))
                continue
            probability = model.fast_probability(ev, word_logits.get(name, 0.0), ml)
            if probability >= model.threshold:
                why = _top_terms(ev.tally)
                if len(why) < MAX_WHY and model_data is not None:
                    words = model_data.top_words(counts, name, MAX_WHY)
                    why += tuple(w for w in words if w not in why)[: MAX_WHY - len(why)]
                out.append(TopicAssignment(name, round(probability / model.threshold, 3), why))
        for topic in self._described:
            similarity = topic.similarity(vector)
            if similarity >= topic.threshold:
                out.append(TopicAssignment(topic.name, round(similarity / topic.threshold, 3),
                                           topic.why(vector, MAX_WHY)))
        out.sort(key=lambda a: -a.score)
        return tuple(out)

    def explain(self, title: str, abstract: str) -> list[TopicVerdict]:
        """Per enabled topic, why this paper got it or not (for people; slower than ``tag``)."""
        paper, present = self._paper(title, abstract)
        found = self._evidence(paper, present)
        vector = weighted(term_counts(title, abstract), self._model.idf) if self._model is not None else {}
        ml = self._model.ml_probability(vector) if self._model is not None else 0.0
        verdicts = []
        for topic in self._topics:
            ev = found.get(topic.name)
            points = round(ev.points / ev.min_score, 3) if ev else 0.0
            terms = _top_terms(ev.tally) if ev else ()
            model = self._learned.get(topic.name)
            if model is None:
                verdicts.append(TopicVerdict(topic.name, "rules", bool(ev and ev.verdict), points, 1.0, points,
                                             terms, (), (), "" if ev else "no rule matched"))
                continue
            row = topic_features(ev, vector, ml)
            probability = model.probability(row) if ev else 0.0
            note = "" if ev else "no rule evidence: the words are not consulted"
            verdicts.append(TopicVerdict(
                topic.name, "learned", bool(ev) and probability >= model.threshold, round(probability, 3),
                model.threshold, points, terms,
                _text_terms(model, row, positive=True, limit=6) if ev else (),
                _text_terms(model, row, positive=False, limit=6) if ev else (),
                note or f"is-ML-paper probability {ml:.2f}"))
        for described in self._described:
            similarity = described.similarity(vector)
            verdicts.append(TopicVerdict(described.name, "described", similarity >= described.threshold,
                                         round(similarity, 3), described.threshold, 0.0, (),
                                         described.why(vector, 6), (), "similarity to the description and examples"))
        return verdicts

    def tag_paper(self, paper: Paper) -> Paper:
        """``paper`` with its ``topics`` replaced by this tagger's verdict."""
        return paper.with_topics(self.tag(paper.title, paper.abstract))

    def tag_many(self, papers: Iterable[Paper]) -> Iterator[Paper]:
        """``tag_paper`` over many papers, lazily, in order."""
        for paper in papers:
            yield self.tag_paper(paper)


def _top_terms(tally: dict[str, float]) -> tuple[str, ...]:
    return tuple(sorted(tally, key=lambda term: -tally[term])[:MAX_WHY])


def _text_terms(model: TopicModel, row: dict[str, float], positive: bool, limit: int) -> tuple[str, ...]:
    """The words (not the evidence features) that moved the logit most in one direction."""
    words: list[str] = []
    for feature, share in model.contributions(row):
        if feature.startswith(("ev:", "ml")) or (share > 0) != positive:
            continue
        word = feature[2:] if feature.startswith("t:") else feature
        if word not in words:
            words.append(word)
        if len(words) == limit:
            break
    return tuple(words)
