"""The seed listing parser: all 77 papers, no page chrome, titles intact, stable ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.errors import SourceError
from digest.models import Paper
from digest.sources.seed import SeedSource, parse_listing

LABELS = Path(__file__).resolve().parent.parent / "fixtures" / "labels" / "seed_topics.jsonl"


def test_finds_every_paper(seed_papers: list[Paper]) -> None:
    assert len(seed_papers) == 77
    labelled = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    assert [p.title for p in seed_papers] == [row["title"] for row in labelled]
    assert [p.abstract for p in seed_papers] == [row["abstract"] for row in labelled]


def test_page_chrome_is_not_a_paper(seed_papers: list[Paper]) -> None:
    titles = {p.title for p in seed_papers}
    for chrome in ("Subscribe", "new", "Get trending papers in your email inbox!", "Mar 18"):
        assert chrome not in titles
    assert not any(t.startswith("byAK") for t in titles)


def test_latex_title_kept(seed_papers: list[Paper]) -> None:
    assert "Sharper Bounds for $\\ell_p$ Sensitivity Sampling" in {p.title for p in seed_papers}


def test_ids_are_stable_and_unique(seed_papers: list[Paper]) -> None:
    from tests.conftest import SEED_FILE

    ids = [p.id for p in seed_papers]
    assert len(set(ids)) == 77
    assert [p.id for p in parse_listing(SEED_FILE.read_text(encoding="utf-8"))] == ids


def test_crlf_and_extra_blank_lines() -> None:
    text = ("Subscribe\r\n\r\nA Title About Pruning\r\n\r\n\r\n" + "An abstract sentence. " * 10 + "\r\n")
    papers = parse_listing(text)
    assert [p.title for p in papers] == ["A Title About Pruning"]
    assert papers[0].abstract.startswith("An abstract sentence.")


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="seed file not found"):
        SeedSource(tmp_path / "none.txt").fetch(None, {})


def test_file_without_pairs_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.txt"
    path.write_text("just\n\nchrome\n")
    with pytest.raises(SourceError, match="no title/abstract pairs"):
        SeedSource(path).fetch(None, {})
