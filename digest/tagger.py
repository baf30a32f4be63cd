"""Pure topic tagging: title + abstract + topic definitions -> topics, scores and evidence."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from digest.models import Paper, TopicAssignment
from digest.topics import TopicSpec


@dataclass(frozen=True, slots=True)
class _CompiledTopic:
    name: str
    spec: TopicSpec
    pattern: re.Pattern[str]
    exclude: re.Pattern[str] | None


def _alternation(patterns: Iterable[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


class Tagger:
    """Tags papers with the enabled topics. Construction compiles the rules once; ``tag`` is pure."""

    def __init__(self, topics: Mapping[str, TopicSpec]) -> None:
        self._topics: list[_CompiledTopic] = []
        for name, spec in topics.items():
            if not spec.enabled or not spec.phrases:
                continue
            pattern = re.compile(rf"\b(?:{_alternation(spec.phrases)})\b", re.IGNORECASE)
            exclude = (re.compile(rf"\b(?:{_alternation(spec.exclude)})\b", re.IGNORECASE)
                       if spec.exclude else None)
            self._topics.append(_CompiledTopic(name, spec, pattern, exclude))

    @property
    def topic_names(self) -> list[str]:
        return [t.name for t in self._topics]

    def tag(self, title: str, abstract: str) -> tuple[TopicAssignment, ...]:
        """Return the topics of one paper, best score first; empty when none applies."""
        out: list[TopicAssignment] = []
        for topic in self._topics:
            score = 0.0
            evidence: list[str] = []
            for text, weight in ((title, 2.0), (abstract, 1.0)):
                blocked = [m.span() for m in topic.exclude.finditer(text)] if topic.exclude else []
                for match in topic.pattern.finditer(text):
                    if any(a <= match.start() < b for a, b in blocked):
                        continue
                    score += weight
                    term = match.group(0).lower()
                    if term not in evidence:
                        evidence.append(term)
            if score >= topic.spec.threshold:
                out.append(TopicAssignment(topic.name, round(score, 3), tuple(evidence[:5])))
        out.sort(key=lambda a: -a.score)
        return tuple(out)

    def tag_paper(self, paper: Paper) -> Paper:
        return paper.with_topics(self.tag(paper.title, paper.abstract))
