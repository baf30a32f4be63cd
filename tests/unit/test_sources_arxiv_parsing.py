"""Parsing arXiv API Atom and rss.arxiv.org feeds from recorded bytes (no I/O)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.errors import SourceError
from digest.sources.arxiv import atom_error_message, build_query, parse_atom
from digest.sources.arxiv_rss import feed_url, parse_feed

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"
API = FIXTURES / "arxiv_api"
RSS = FIXTURES / "arxiv_rss"
BREVIO = API / "brevio-ai_cat_cs.LG_OR_cs.AI_m20_2026-04-30.xml"


def test_atom_page_fields() -> None:
    page = parse_atom(BREVIO.read_bytes())
    assert (page.total_results, page.start_index, page.entry_count) == (364218, 0, 20)
    first = page.papers[0]
    assert (first.id, first.version) == ("2604.26951", 1)
    assert first.title == "Turning the TIDE: Cross-Architecture Distillation for Diffusion Large Language Models"
    assert first.authors == ("Gongbo Zhang", "Wen Wang", "Ye Tian", "Li Yuan")
    assert first.published == datetime(2026, 4, 29, 17, 59, 1, tzinfo=UTC)
    assert first.categories == ("cs.CL", "cs.AI", "cs.LG")  # primary first, no duplicates
    assert first.url == "https://arxiv.org/abs/2604.26951"
    assert first.pdf_url == "https://arxiv.org/pdf/2604.26951"
    assert first.sources == ("arxiv",)


def test_latex_is_kept_as_written() -> None:
    titles = [p.title for p in parse_atom(BREVIO.read_bytes()).papers]
    assert "A Note on How to Remove the $\\ln\\ln T$ Term from the Squint Bound" in titles


def test_wrapped_2016_format_is_collapsed() -> None:
    page = parse_atom((API / "arxivpy_2016_search_query_au_del_maestro.xml").read_bytes())
    assert page.total_results == 31 and len(page.papers) == 10
    first = page.papers[0]
    assert first.abstract.startswith("As helium-4 is cooled below 2.17 K it undergoes a phase transition to a "
                                     "fundamentally new state")
    assert "\n" not in first.abstract and "  " not in first.abstract


def test_old_style_ids_keep_their_archive() -> None:
    paper = parse_atom((API / "arxivpy_2026_id_astro-ph_0601001_s0_m100_3150dca9dc76.xml").read_bytes()).papers[0]
    assert (paper.id, paper.version) == ("astro-ph/0601001", 1)
    assert paper.url == "https://arxiv.org/abs/astro-ph/0601001"


def test_non_ascii_authors_survive() -> None:
    paper = parse_atom((API / "arxivpy_2026_id_1707.08567_s0_m100_6a1afebfc6a3.xml").read_bytes()).papers[0]
    assert len(paper.authors) == 34  # every <author> element in the file
    assert "Dirk Wübben" in paper.authors


def test_empty_result_is_not_an_error() -> None:
    page = parse_atom((API / "arxivpy_2026_id_0000.0000_s0_m100_8b51d9633a68.xml").read_bytes())
    assert page.papers == [] and page.total_results == 0


def test_api_error_entry_is_a_source_error() -> None:
    body = (API / "arxivpy_2026_id_abc_s0_m100_b79c8dcf6bc3.xml").read_bytes()
    with pytest.raises(SourceError, match="arXiv API error: incorrect id format for abc"):
        parse_atom(body)
    assert atom_error_message(body) == "arXiv API error: incorrect id format for abc"
    assert atom_error_message(BREVIO.read_bytes()) is None
    assert atom_error_message(b"<html>") is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (BREVIO.read_bytes()[:5000], "invalid XML"),
        (b"<html><body>Service unavailable</body></html>", "expected an Atom <feed>, got <html>"),
        (b"", "invalid XML"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "expected an Atom <feed>"),
    ],
)
def test_bad_atom_documents(body: bytes, expected: str) -> None:
    with pytest.raises(SourceError, match=expected):
        parse_atom(body)


def test_query_building() -> None:
    assert build_query(["cs.LG", "cs.AI"]) == "cat:cs.LG OR cat:cs.AI"
    since = datetime(2026, 7, 28, tzinfo=UTC)
    until = datetime(2026, 7, 30, 23, 59, tzinfo=UTC)
    assert build_query(["cs.LG"], since, until) == "(cat:cs.LG) AND submittedDate:[202607280000 TO 202607302359]"


def test_rss_items() -> None:
    feed = parse_feed((RSS / "distill_arxiv_cs_lg_2026-04-27_trimmed3items.xml").read_bytes())
    assert feed.title == "cs.LG updates on arXiv.org"
    assert feed.date == datetime(2026, 4, 27, 4, 0, tzinfo=UTC)
    assert [i.announce_type for i in feed.items] == ["new", "new", "new"]
    paper = feed.items[0].paper
    assert (paper.id, paper.version) == ("2604.21952", 1)
    assert paper.authors[:3] == ("Muhammad Shafique", "Abdul Basit", "Muhammad Abdullah Hanif")
    assert len(paper.authors) == 6
    assert paper.categories == ("cs.LG", "cs.AI", "cs.AR", "cs.NE", "cs.RO")
    assert paper.abstract.startswith("This work presents a multi-layered methodology")
    assert "Announce Type" not in paper.abstract
    assert "visual resolution & stride" in paper.abstract
    assert paper.published == datetime(2026, 4, 27, 4, 0, tzinfo=UTC)
    assert paper.url == "https://arxiv.org/abs/2604.21952"


def test_full_rss_feed_announce_types_and_versions() -> None:
    feed = parse_feed((RSS / "aioarxiv_rss_all-archives_2024-11-28.xml").read_bytes())
    assert len(feed.items) == 1504
    assert Counter(i.announce_type for i in feed.items) == {"new": 926, "replace": 569, "cross": 9}
    replaced = [i.paper for i in feed.items if i.announce_type == "replace"]
    assert all(p.version is not None and p.version >= 2 for p in replaced)
    assert all("Announce Type" not in i.paper.abstract and i.paper.abstract for i in feed.items)
    assert sum("cs.LG" in i.paper.categories for i in feed.items) == 218


def test_empty_feed_is_normal() -> None:
    feed = parse_feed((RSS / "aioarxiv_rss_empty_test-archive_2024-11-28.xml").read_bytes())
    assert feed.items == [] and feed.date is not None


def test_feed_error_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="arXiv feed error: Bad archive 'astroph'"):
        parse_feed((RSS / "aioarxiv_rss_error_bad-archive_2024-11-28.xml").read_bytes())


def test_atom_variant_of_the_announcement_feed() -> None:
    body = b"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom">
  <title>cs.LG updates on arXiv.org</title>
  <updated>2026-04-27T04:00:01Z</updated>
  <entry>
    <id>oai:arXiv.org:2604.21952v2</id>
    <title>A  title
      with $x^2$</title>
    <summary>arXiv:2604.21952v2 Announce Type: replace-cross
Abstract: Body text.</summary>
    <author><name>A. One, B. Two</name></author>
    <category term="cs.LG"/>
    <published>2026-04-27T00:00:00-04:00</published>
  </entry>
</feed>"""
    feed = parse_feed(body)
    item = feed.items[0]
    assert item.announce_type == "replace-cross"
    assert (item.paper.id, item.paper.version, item.paper.title) == ("2604.21952", 2, "A title with $x^2$")
    assert item.paper.abstract == "Body text."
    assert item.paper.authors == ("A. One", "B. Two")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ((RSS / "distill_arxiv_cs_ai_2026-04-27_trimmed3items.xml").read_bytes()[:3000], "invalid XML"),
        (b"<html><body>Oops</body></html>", "expected an RSS or Atom feed, got <html>"),
        (b"<rss version='2.0'></rss>", "no <channel>"),
    ],
)
def test_bad_feeds(body: bytes, expected: str) -> None:
    with pytest.raises(SourceError, match=expected):
        parse_feed(body)


def test_feed_url_joins_categories() -> None:
    assert feed_url("https://rss.arxiv.org/rss/", ["cs.LG", "cs.AI"]) == "https://rss.arxiv.org/rss/cs.LG+cs.AI"
