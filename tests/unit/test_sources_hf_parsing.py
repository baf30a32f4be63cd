"""Parsing Hugging Face daily-paper JSON and listing pages from recorded bytes (no I/O)."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.errors import SourceError
from digest.sources.hf_daily import daily_date, load_entries, paper_from_entry, parse_daily_papers
from digest.sources.hf_papers import listing_url, parse_papers_page

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"
DAILY = FIXTURES / "hf_daily_papers"
PAGES = FIXTURES / "hf_papers_html"


def test_daily_papers_fields_from_a_recent_day() -> None:
    papers = parse_daily_papers((DAILY / "2026-08-18.json").read_bytes())
    assert len(papers) == 29
    first = papers[0]
    assert first.id == "2608.15265"
    assert first.version is None
    assert first.title == "VibeWorlding: Can Multimodal Agents Construct 3D Open Worlds End-to-End?"
    assert first.abstract.startswith("Constructing an interactive 3D open world from a user query")
    assert first.authors[:2] == ("Yansong Ning", "Jingwen Ye") and len(first.authors) == 8
    # paper.publishedAt (the arXiv date), not the top-level publishedAt of the HF post
    assert first.published == datetime(2026, 8, 15, tzinfo=UTC)
    assert first.upvotes == 39
    assert first.code_url == "https://github.com/usail-hkust/VibeWorlding-Gym"
    assert first.project_url == "https://huggingface.co/collections/usail-hkust/vibeworlder"
    assert first.ai_keywords[:2] == ("multimodal agents", "3D world generation")
    assert first.ai_summary and first.ai_summary.startswith("A unified framework")
    assert first.url == "https://arxiv.org/abs/2608.15265"
    assert first.pdf_url == "https://arxiv.org/pdf/2608.15265"
    assert first.sources == ("hf_daily",)
    assert len({p.id for p in papers}) == 29


def test_old_format_collapses_line_breaks_and_lacks_ai_fields() -> None:
    raw = json.loads((DAILY / "2024-05-27.json").read_bytes())
    assert "\n" in raw[0]["paper"]["title"]
    papers = parse_daily_papers((DAILY / "2024-05-27.json").read_bytes())
    assert len(papers) == 13
    assert papers[0].title == "ConvLLaVA: Hierarchical Backbones as Visual Encoder for Large Multimodal Models"
    assert all("\n" not in p.title and "  " not in p.abstract for p in papers)
    assert all(p.ai_summary is None and p.ai_keywords == () for p in papers)


def test_compact_response_parses_like_the_indented_one() -> None:
    papers = parse_daily_papers((DAILY / "2026-05-08.json").read_bytes())
    assert len(papers) == 37
    assert papers[0].id == "2605.05242"
    assert all(p.published is not None and p.published.tzinfo is not None for p in papers)


def test_paper_fields_win_over_top_level_and_every_field_is_optional() -> None:
    entry = {
        "title": "Top level title",
        "summary": "top summary",
        "githubRepo": "https://github.com/top/level",
        "paper": {"id": "2501.00001v3", "title": "Inner\n  title", "upvotes": 5},
    }
    paper = paper_from_entry(entry, "hf_daily")
    assert paper is not None
    assert (paper.id, paper.version, paper.title) == ("2501.00001", 3, "Inner title")
    assert paper.abstract == "top summary"  # missing inside paper: the top-level copy is used
    assert paper.code_url == "https://github.com/top/level"
    assert paper.authors == () and paper.published is None and paper.ai_keywords == ()

    no_id = paper_from_entry({"title": "Just a title"}, "hf_daily")
    assert no_id is not None and no_id.id.startswith("title:") and no_id.url is None
    assert paper_from_entry({"paper": {"id": "2501.00001"}}, "hf_daily") is None
    assert parse_daily_papers(b'[{"paper": {"title": "T", "upvotes": "many"}}, 7, null]')[0].upvotes is None


def test_daily_date_is_the_newest_submission_day() -> None:
    entries = load_entries((DAILY / "2026-08-18.json").read_bytes())
    assert daily_date(entries) == "2026-08-18"
    assert daily_date([{"paper": {}}]) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'[{"paper": {"id": "2608.1', "invalid JSON"),
        (b"<html><body>Bad gateway</body></html>", "invalid JSON"),
        (b'{"error": "Invalid date"}', "expected a JSON array of papers, got dict with keys error"),
        (b"\xff\xfe\x00", "not UTF-8 JSON"),
    ],
)
def test_bad_bodies_are_source_errors(body: bytes, expected: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_daily_papers(body)
    assert expected in str(info.value)
    assert info.value.source == "hf_daily"


def test_listing_page_uses_the_hydration_data() -> None:
    page = parse_papers_page((PAGES / "date_2026-08-18.html").read_bytes())
    assert page.via == "hydration"
    assert page.date == "2026-08-18"
    api = parse_daily_papers((DAILY / "2026-08-18.json").read_bytes(), source="hf_papers")
    assert page.papers == api


def _without_hydration(markup: str) -> str:
    return re.sub(r'<div class="SVELTE_HYDRATER[^>]*>', "<div>", markup, count=1)


def test_listing_page_falls_back_to_cards() -> None:
    markup = _without_hydration((PAGES / "date_2026-08-19.html").read_text(encoding="utf-8"))
    page = parse_papers_page(markup)
    assert page.via == "cards"
    assert len(page.papers) == 26
    first = page.papers[0]
    assert (first.id, first.title, first.upvotes) == (
        "2608.17271", "ASI-Bench: At the Dawn of Artificial Superintelligence", 38)
    assert first.abstract == ""


def test_broken_hydration_json_falls_back_to_cards() -> None:
    markup = (PAGES / "date_2026-08-18.html").read_text(encoding="utf-8")
    broken = markup.replace("&quot;dailyPapers&quot;: [", "&quot;dailyPapers&quot;: [{", 1)
    page = parse_papers_page(broken)
    assert page.via == "cards" and len(page.papers) == 29


def test_page_without_structure_says_the_layout_changed() -> None:
    markup = "<html><head><title>Daily Papers</title></head><body><p>Something new</p></body></html>"
    with pytest.raises(SourceError) as info:
        parse_papers_page(markup, url="https://huggingface.co/papers")
    message = str(info.value)
    assert "no SVELTE_HYDRATER element" in message
    assert "layout may have changed" in message
    assert "https://huggingface.co/papers" in message


def test_empty_hydration_list_is_an_empty_listing() -> None:
    props = html.escape(json.dumps({"dailyPapers": [], "dateString": "2026-08-16"}))
    markup = f'<div class="SVELTE_HYDRATER contents" data-target="DailyPapers" data-props="{props}"></div>'
    page = parse_papers_page(markup)
    assert page.papers == [] and page.date == "2026-08-16"


@pytest.mark.parametrize(
    ("listing", "day", "expected"),
    [
        ("daily", None, "https://hf.co/papers"),
        ("daily", date(2026, 8, 18), "https://hf.co/papers/date/2026-08-18"),
        ("weekly", date(2026, 8, 18), "https://hf.co/papers/week/2026-W34"),
        ("weekly", None, "https://hf.co/papers/week/2027-W01"),
        ("monthly", date(2026, 8, 18), "https://hf.co/papers/month/2026-08"),
        ("trending", date(2026, 8, 18), "https://hf.co/papers/trending"),
    ],
)
def test_listing_urls(listing: str, day: date | None, expected: str) -> None:
    assert listing_url("https://hf.co/papers/", listing, day, today=date(2027, 1, 4)) == expected
