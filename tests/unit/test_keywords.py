"""Keywords and exclusions match the way people write: inflections, hyphen = space, trailing ``*``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digest.keywords import fold, keyword_matches
from digest.models import Paper, Subscriber
from digest.selection import SelectionContext, select

NOW = datetime(2026, 8, 19, 12, 0, tzinfo=UTC)
CTX = SelectionContext(labels={"pruning": "Pruning"})


def matches(keyword: str, text: str) -> bool:
    return keyword_matches(keyword, fold(text))


@pytest.mark.parametrize(("keyword", "text"), [
    ("agent", "Tool-using agents plan ahead."),
    ("agents", "An agent that plans."),
    ("prune", "We pruned half the heads."),
    ("prune", "Structured pruning of LLMs."),
    ("pruning", "Heads are pruned."),
    ("strategy", "Two strategies compared."),
    ("model", "Diffusion models"),
    ("plan", "planning with LLMs"),
    ("search", "architecture searches"),
    ("process", "Gaussian processes"),
    ("low-rank", "a low rank adapter"),
    ("low rank", "Low-Rank Adaptation"),
    ("low-rank", "a low\u2013rank update"),
    ("neural network", "deep neural networks"),
    ("agent*", "agentic workflows"),
    ("quantiz*", "Quantization-aware training"),
    ("Schrödinger", "the Schrodinger bridge"),
    ("MoE", "sparse MoEs"),
])
def test_keyword_matches_inflections_and_variants(keyword: str, text: str) -> None:
    assert matches(keyword, text)


@pytest.mark.parametrize(("keyword", "text"), [
    ("rank", "Frank and crank"),
    ("agent", "agentic workflows"),  # a longer word needs the trailing *
    ("nas", "nasal spray"),
    ("low-rank", "lower ranking"),
    ("model", "modular"),
    ("*", "anything"),
    ("", "anything"),
])
def test_keyword_does_not_match_other_words(keyword: str, text: str) -> None:
    assert not matches(keyword, text)


def paper(pid: str, title: str) -> Paper:
    return Paper(id=pid, title=title, abstract="An abstract.", first_seen=NOW - timedelta(hours=1))


def issue_ids(keywords: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[str]:
    papers = [paper("a", "Agents that plan"), paper("b", "Agentic retrieval"),
              paper("c", "Low rank adapters for agents"), paper("d", "Weather report")]
    reader = Subscriber(email="r@example.org", id=1, keywords=keywords, exclude=exclude)
    issue = select(papers, reader, set(), NOW, NOW.date(), CTX)
    return sorted(e.paper.id for e in issue.entries)


def test_include_keyword_with_inflection_and_prefix() -> None:
    assert issue_ids(keywords=("agent",)) == ["a", "c"]
    assert issue_ids(keywords=("agent*",)) == ["a", "b", "c"]


def test_exclude_keyword_with_inflection_and_hyphen_variant() -> None:
    assert issue_ids(keywords=("agent*",), exclude=("low-rank",)) == ["a", "b"]
    assert issue_ids(keywords=("agent*",), exclude=("agents",)) == ["b"]
    assert issue_ids(keywords=("agent*",), exclude=("agentic*",)) == ["a", "c"]


@pytest.mark.parametrize(("keyword", "text"), [
    ("planning", "we plan"), ("embedding", "embedded tokens"), ("trained", "training"),
    ("string", "strings"), ("seed", "seeds"),
])
def test_verb_forms_meet(keyword: str, text: str) -> None:
    assert matches(keyword, text)


def test_short_stems_are_not_inflected_away() -> None:
    assert not matches("string", "stress")
    assert not matches("speed", "spent")
