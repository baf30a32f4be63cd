"""arxiv (API) and arxiv_rss against a real HTTP server on 127.0.0.1 serving the recorded files."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from httpserver import HttpServer, Reply

from digest.config import ArxivRssSource as ArxivRssSettings
from digest.config import ArxivSource as ArxivSettings
from digest.errors import SourceError
from digest.sources.arxiv import ArxivSource
from digest.sources.arxiv_rss import ArxivRssSource
from digest.sources.http import HostPacer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"
API = FIXTURES / "arxiv_api"
RSS = FIXTURES / "arxiv_rss"
NEWER = API / "personal-news-feed_cat_cs.AI_OR_cs.LG_OR_cs.CL_m25_2026-08-02.xml"  # 25 from 2026-07-30
OLDER = API / "brevio-ai_cat_cs.LG_OR_cs.AI_m20_2026-04-30.xml"  # 20 from 2026-04-29
AGENT = "paper-digest/0.1.0 (+mailto:digest@example.org)"
FAST = {"timeout_seconds": 2.0, "max_retries": 1, "backoff_seconds": 0.01, "max_retry_after_seconds": 30.0}


def api(server: HttpServer, client: httpx.Client, now: datetime | None = None, **overrides: object) -> ArxivSource:
    cfg = ArxivSettings.model_validate({
        "enabled": True, "url": server.url("/api/query"), "categories": ["cs.LG", "cs.AI"],
        "delay_seconds": 0.0, "page_size": 25, **FAST, **overrides})
    when = now or datetime(2026, 7, 31, 6, 0, tzinfo=UTC)
    return ArxivSource(cfg, client, AGENT, pacer=HostPacer(), sleep=lambda _s: None, now=lambda: when)


def two_pages(server: HttpServer, **second: object) -> None:
    server.route("/api/query", Reply.file(NEWER), query={"start": "0"})
    server.route("/api/query", Reply.file(OLDER, **second), query={"start": "25"})


# ---- arxiv API --------------------------------------------------------------------------------------

def test_paging_stops_on_date(http_server: HttpServer, http_client: httpx.Client) -> None:
    two_pages(http_server)
    result = api(http_server, http_client, lookback_days=1).fetch(date(2026, 7, 30), {})
    assert len(result.papers) == 25
    assert {p.published.date() for p in result.papers if p.published} == {date(2026, 7, 30)}
    requests = http_server.requests_to("/api/query")
    assert [r.query["start"] for r in requests] == ["0", "25"]  # the second page held only older papers
    first = requests[0].query
    assert first["search_query"] == (
        "(cat:cs.LG OR cat:cs.AI) AND submittedDate:[202607300000 TO 202607302359]")
    assert (first["sortBy"], first["sortOrder"], first["max_results"]) == ("submittedDate", "descending", "25")
    assert requests[0].headers["user-agent"] == AGENT
    assert result.state == {"watermark": "2026-07-30T17:59:56+00:00"}


def test_paging_stops_at_the_cap(http_server: HttpServer, http_client: httpx.Client) -> None:
    two_pages(http_server)
    http_server.route("/api/query", Reply(status=500), query={"start": "50"})  # must never be asked
    result = api(http_server, http_client, lookback_days=365, max_results=30).fetch(date(2026, 7, 30), {})
    assert len(result.papers) == 30
    assert len(http_server.requests_to("/api/query")) == 2


def test_latest_stops_at_the_watermark(http_server: HttpServer, http_client: httpx.Client) -> None:
    two_pages(http_server)
    source = api(http_server, http_client, watermark_overlap_hours=0)
    result = source.fetch(None, {"watermark": "2026-07-30T17:40:00+00:00"})
    assert http_server.requests[0].query["search_query"] == "cat:cs.LG OR cat:cs.AI"
    assert len(http_server.requests) == 1
    assert [p.published for p in result.papers] == sorted(
        (p.published for p in result.papers if p.published), reverse=True)
    assert all(p.published and p.published >= datetime(2026, 7, 30, 17, 40, tzinfo=UTC) for p in result.papers)
    assert len(result.papers) == 14
    assert result.state["watermark"] == "2026-07-30T17:59:56+00:00"


def test_latest_without_watermark_uses_the_lookback(http_server: HttpServer, http_client: httpx.Client) -> None:
    two_pages(http_server)
    result = api(http_server, http_client, lookback_days=3).fetch(None, {})
    assert len(result.papers) == 25 and len(http_server.requests) == 2


def test_requests_are_paced(http_server: HttpServer, http_client: httpx.Client) -> None:
    two_pages(http_server)
    cfg = ArxivSettings.model_validate({
        "enabled": True, "url": http_server.url("/api/query"), "delay_seconds": 0.3, "page_size": 25,
        "lookback_days": 1, **FAST})
    ArxivSource(cfg, http_client, AGENT, pacer=HostPacer()).fetch(date(2026, 7, 30), {})
    times = [r.at for r in http_server.requests]
    assert len(times) == 2
    # Starts are spaced on the client; arrival adds a little noise (the first request also connects).
    assert all(later - earlier >= 0.25 for earlier, later in itertools.pairwise(times))


def test_empty_page_within_the_results_is_retried(http_server: HttpServer, http_client: httpx.Client) -> None:
    empty = (API / "arxivpy_2026_id_0000.0000_s0_m100_8b51d9633a68.xml").read_text(encoding="utf-8")
    flaky = empty.replace("<opensearch:totalResults>0<", "<opensearch:totalResults>449736<").encode()
    http_server.route("/api/query", Reply(body=flaky), Reply.file(NEWER), query={"start": "0"})
    http_server.route("/api/query", Reply.file(OLDER), query={"start": "25"})
    result = api(http_server, http_client, lookback_days=1).fetch(date(2026, 7, 30), {})
    assert len(result.papers) == 25
    assert [r.query["start"] for r in http_server.requests] == ["0", "0", "25"]


def test_no_results_is_not_an_error(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/api/query", Reply.file(API / "arxivpy_2026_id_0000.0000_s0_m100_8b51d9633a68.xml"))
    result = api(http_server, http_client).fetch(date(2026, 7, 30), {"watermark": "2026-07-01T00:00:00+00:00"})
    assert result.papers == [] and result.state == {"watermark": "2026-07-01T00:00:00+00:00"}


ERROR_FEED = (API / "arxivpy_2026_id_abc_s0_m100_b79c8dcf6bc3.xml").read_bytes()
API_FAULTS = [
    pytest.param(Reply(body=ERROR_FEED), "arXiv API error: incorrect id format for abc", id="error-entry"),
    pytest.param(Reply(status=400, body=ERROR_FEED),
                 "HTTP 400 Bad Request .*: arXiv API error: incorrect id format for abc", id="400-error-feed"),
    pytest.param(Reply(status=500), r"HTTP 500 .* \(gave up after 2 attempts\)", id="500"),
    pytest.param(Reply(status=429, headers={"Retry-After": "3600"}), "more than max_retry_after_seconds",
                 id="429-too-long"),
    pytest.param(Reply(body=b"<feed/>", delay=3.0), "timed out after 0.3 s", id="timeout"),
    pytest.param(Reply(body=NEWER.read_bytes()[:30_000]), r"invalid XML \(30000 bytes\)", id="truncated-xml"),
    pytest.param(Reply.file(NEWER, truncate=30_000), "connection failed", id="cut-transfer"),
    pytest.param(Reply(body=b"<html><body>Rate exceeded.</body></html>"), "expected an Atom <feed>, got <html>",
                 id="html"),
]


@pytest.mark.parametrize(("reply", "reason"), API_FAULTS)
def test_api_faults(http_server: HttpServer, http_client: httpx.Client, reply: Reply, reason: str) -> None:
    http_server.route("/api/query", reply)
    with pytest.raises(SourceError) as info:
        api(http_server, http_client, timeout_seconds=0.3).fetch(date(2026, 7, 30), {})
    assert info.value.source == "arxiv"
    assert re.search(reason, info.value.reason), info.value.reason


def test_fault_on_a_later_page_fails_the_source(http_server: HttpServer, http_client: httpx.Client) -> None:
    two_pages(http_server, truncate=1000)
    with pytest.raises(SourceError, match="connection failed"):
        api(http_server, http_client, lookback_days=1).fetch(date(2026, 7, 30), {})


# ---- arxiv_rss --------------------------------------------------------------------------------------

def rss(server: HttpServer, client: httpx.Client, **overrides: object) -> ArxivRssSource:
    cfg = ArxivRssSettings.model_validate({"enabled": True, "url": server.url("/rss"), **FAST, **overrides})
    return ArxivRssSource(cfg, client, AGENT, pacer=HostPacer(), sleep=lambda _s: None)


def test_rss_one_request_for_all_categories(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/rss/cs.LG+cs.AI", Reply.file(RSS / "distill_arxiv_cs_lg_2026-04-27_trimmed3items.xml",
                                                     content_type="application/rss+xml"))
    result = rss(http_server, http_client, categories=["cs.LG", "cs.AI"]).fetch(None, {})
    assert [p.id for p in result.papers] == ["2604.21952", "2604.21953", "2604.21956"]
    assert result.papers[0].sources == ("arxiv_rss",)
    assert result.state["feed_date"] == "2026-04-27T04:00:00+00:00"
    assert len(http_server.requests) == 1
    assert http_server.requests[0].headers["user-agent"] == AGENT


def test_rss_filters_announce_types(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/rss/cs.LG", Reply.file(RSS / "aioarxiv_rss_all-archives_2024-11-28.xml"))
    new_and_cross = rss(http_server, http_client).fetch(None, {})
    assert len(new_and_cross.papers) == 926 + 9
    everything = rss(http_server, http_client, announce_types=["new", "cross", "replace"]).fetch(None, {})
    assert len(everything.papers) == 1504
    assert len({p.id for p in everything.papers}) == 1504


def test_rss_seen_feed_and_etag(http_server: HttpServer, http_client: httpx.Client) -> None:
    body = RSS / "distill_arxiv_cs_ai_2026-04-27_trimmed3items.xml"
    http_server.route("/rss/cs.LG", Reply.file(body, etag='"rss1"'), Reply.file(body))
    source = rss(http_server, http_client)
    first = source.fetch(None, {})
    assert len(first.papers) == 3
    second = source.fetch(None, first.state)  # server answers 304 to the ETag
    assert second.not_modified and second.papers == []
    assert http_server.requests[1].headers["if-none-match"] == '"rss1"'
    http_server.route("/rss/cs.LG", Reply.file(body))  # no ETag support: the feed date says "seen"
    without_etag = {k: v for k, v in first.state.items() if k != "etag"}
    third = source.fetch(None, without_etag)
    assert third.not_modified and third.papers == []
    wider = rss(http_server, http_client, announce_types=["new", "replace"]).fetch(None, without_etag)
    assert not wider.not_modified and len(wider.papers) == 3  # another filter has not seen this feed


def test_rss_empty_weekend_feed_is_normal(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/rss/cs.LG", Reply.file(RSS / "aioarxiv_rss_empty_test-archive_2024-11-28.xml"))
    result = rss(http_server, http_client).fetch(None, {})
    assert result.papers == [] and not result.not_modified
    assert result.state["feed_date"] == "2024-11-28T05:00:00+00:00"


RSS_FAULTS = [
    pytest.param(Reply.file(RSS / "aioarxiv_rss_error_bad-archive_2024-11-28.xml"),
                 "arXiv feed error: Bad archive 'astroph'", id="feed-error"),
    pytest.param(Reply(body=(RSS / "aioarxiv_rss_all-archives_2024-11-28.xml").read_bytes()[:100_000]),
                 "invalid XML", id="truncated-xml"),
    pytest.param(Reply(status=502), "HTTP 502 Bad Gateway", id="502"),
    pytest.param(Reply(body=b"<rss/>", delay=3.0), "timed out", id="timeout"),
    pytest.param(Reply(body=b"<!DOCTYPE html><html><body>maintenance</body></html>"),
                 "expected an RSS or Atom feed, got <html>", id="html"),
]


@pytest.mark.parametrize(("reply", "reason"), RSS_FAULTS)
def test_rss_faults(http_server: HttpServer, http_client: httpx.Client, reply: Reply, reason: str) -> None:
    http_server.route("/rss/cs.LG", reply)
    with pytest.raises(SourceError) as info:
        rss(http_server, http_client, timeout_seconds=0.3).fetch(None, {})
    assert info.value.source == "arxiv_rss"
    assert re.search(reason, info.value.reason), info.value.reason
