"""hf_daily and hf_papers against a real HTTP server on 127.0.0.1 serving the recorded files."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from httpserver import HttpServer, Reply

from digest.config import HfDailySource as HfDailySettings
from digest.config import HfPapersSource as HfPapersSettings
from digest.errors import SourceError
from digest.sources.hf_daily import HfDailySource
from digest.sources.hf_papers import HfPapersSource
from digest.sources.http import HostPacer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"
DAILY = FIXTURES / "hf_daily_papers"
PAGES = FIXTURES / "hf_papers_html"
AGENT = "paper-digest/0.1.0 (+mailto:digest@example.org)"
FAST = {"timeout_seconds": 2.0, "max_retries": 1, "backoff_seconds": 0.01, "max_retry_after_seconds": 30.0}


def daily(server: HttpServer, client: httpx.Client, **overrides: object) -> HfDailySource:
    cfg = HfDailySettings.model_validate(
        {"enabled": True, "url": server.url("/api/daily_papers"), **FAST, **overrides})
    return HfDailySource(cfg, client, AGENT, pacer=HostPacer(), sleep=lambda _s: None)


def papers_page(server: HttpServer, client: httpx.Client, **overrides: object) -> HfPapersSource:
    cfg = HfPapersSettings.model_validate({"enabled": True, "url": server.url("/papers"), **FAST, **overrides})
    return HfPapersSource(cfg, client, AGENT, pacer=HostPacer(), sleep=lambda _s: None,
                          now=lambda: datetime(2026, 8, 19, 9, 0, tzinfo=UTC))


# ---- hf_daily ---------------------------------------------------------------------------------------

def test_daily_for_a_date(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/api/daily_papers", Reply.file(DAILY / "2026-08-18.json", etag='W/"d18"'),
                      query={"date": "2026-08-18"})
    result = daily(http_server, http_client).fetch(date(2026, 8, 18), {})
    assert result.source == "hf_daily" and not result.not_modified
    assert len(result.papers) == 29
    assert result.papers[0].id == "2608.15265" and result.papers[0].upvotes == 39
    assert result.state["date"] == "2026-08-18"
    assert result.state["etag"] == 'W/"d18"'
    request = http_server.requests_to("/api/daily_papers")[0]
    assert request.query == {"date": "2026-08-18"}
    assert request.headers["user-agent"] == AGENT


def test_daily_latest_then_not_modified(http_server: HttpServer, http_client: httpx.Client) -> None:
    modified = "Wed, 19 Aug 2026 06:00:00 GMT"
    http_server.route("/api/daily_papers", Reply.file(DAILY / "2026-08-19.json", last_modified=modified))
    source = daily(http_server, http_client)
    first = source.fetch(None, {"date": "2026-08-18"})
    assert len(first.papers) == 26
    assert first.state["date"] == "2026-08-19"  # the watermark moves forward
    assert first.state["last_modified"] == modified
    assert http_server.requests[0].query == {}

    second = source.fetch(None, first.state)
    assert second.not_modified and second.papers == [] and second.state == first.state
    assert http_server.requests[1].headers["if-modified-since"] == modified


def test_daily_validators_are_not_reused_for_another_date(
        http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/api/daily_papers", Reply.file(DAILY / "2026-08-19.json", etag='"d19"'))
    source = daily(http_server, http_client)
    state = source.fetch(date(2026, 8, 19), {}).state
    source.fetch(date(2026, 8, 18), state)
    assert "if-none-match" not in http_server.requests[1].headers
    source.fetch(date(2026, 8, 19), state)
    assert http_server.requests[2].headers["if-none-match"] == '"d19"'


def test_daily_compact_and_old_formats(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/api/daily_papers", Reply.file(DAILY / "2024-05-27.json"), query={"date": "2024-05-27"})
    http_server.route("/api/daily_papers", Reply.file(DAILY / "2026-07-31.json"), query={"date": "2026-07-31"})
    source = daily(http_server, http_client)
    old = source.fetch(date(2024, 5, 27), {})
    assert len(old.papers) == 13 and all("\n" not in p.title for p in old.papers)
    assert old.state["date"] == "2024-05-27"  # no submittedOnDailyAt in 2024: the requested day
    compact = source.fetch(date(2026, 7, 31), {})
    assert len(compact.papers) == 30 and all(p.ai_summary is None for p in compact.papers)


DAILY_FAULTS = [
    pytest.param(Reply(status=500), r"HTTP 500 Internal Server Error .* \(gave up after 2 attempts\)", id="500"),
    pytest.param(Reply(status=429, headers={"Retry-After": "86400"}),
                 "retry after 86400 s, more than max_retry_after_seconds = 30", id="429-too-long"),
    pytest.param(Reply(body=b"[]", delay=3.0), r"timed out after 0.3 s", id="timeout"),
    pytest.param(Reply(body=(DAILY / "2026-08-18.json").read_bytes()[:40_000], content_type="application/json"),
                 r"invalid JSON \(40000 bytes\)", id="truncated-json"),
    pytest.param(Reply.file(DAILY / "2026-08-18.json", truncate=40_000), "connection failed", id="cut-transfer"),
    pytest.param(Reply(body=b"<!doctype html><title>Hugging Face</title>", content_type="text/html"),
                 "invalid JSON", id="html"),
    pytest.param(Reply(body=b'{"error": "Invalid date"}', content_type="application/json"),
                 "expected a JSON array of papers, got dict with keys error", id="json-object"),
]


@pytest.mark.parametrize(("reply", "reason"), DAILY_FAULTS)
def test_daily_faults(http_server: HttpServer, http_client: httpx.Client, reply: Reply, reason: str) -> None:
    http_server.route("/api/daily_papers", reply)
    with pytest.raises(SourceError) as info:
        daily(http_server, http_client, timeout_seconds=0.3).fetch(date(2026, 8, 18), {})
    assert info.value.source == "hf_daily"
    assert re.search(reason, info.value.reason), info.value.reason
    assert "\n" not in str(info.value)


# ---- hf_papers --------------------------------------------------------------------------------------

def test_papers_page_for_a_date(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/papers/date/2026-08-18", Reply.file(PAGES / "date_2026-08-18.html", etag='"p18"'))
    source = papers_page(http_server, http_client)
    result = source.fetch(date(2026, 8, 18), {})
    assert len(result.papers) == 29
    first = result.papers[0]
    assert first.id == "2608.15265" and first.abstract and first.authors and first.sources == ("hf_papers",)
    assert result.state["date"] == "2026-08-18"
    again = source.fetch(date(2026, 8, 18), result.state)
    assert again.not_modified and again.papers == []


def test_papers_today_and_other_listings(http_server: HttpServer, http_client: httpx.Client) -> None:
    for path in ("/papers", "/papers/week/2026-W34", "/papers/month/2026-08", "/papers/trending"):
        http_server.route(path, Reply.file(PAGES / "date_2026-08-19.html"))
    assert len(papers_page(http_server, http_client).fetch(None, {}).papers) == 26
    for listing in ("weekly", "monthly", "trending"):
        assert len(papers_page(http_server, http_client, listing=listing).fetch(None, {}).papers) == 26
    assert [r.path for r in http_server.requests] == [
        "/papers", "/papers/week/2026-W34", "/papers/month/2026-08", "/papers/trending"]


def test_papers_fall_back_to_cards(http_server: HttpServer, http_client: httpx.Client) -> None:
    markup = (PAGES / "date_2026-08-19.html").read_text(encoding="utf-8")
    without = re.sub(r'<div class="SVELTE_HYDRATER[^>]*>', "<div>", markup, count=1)
    http_server.route("/papers", Reply(body=without.encode(), content_type="text/html"))
    result = papers_page(http_server, http_client).fetch(None, {})
    assert len(result.papers) == 26
    assert result.papers[0].title == "ASI-Bench: At the Dawn of Artificial Superintelligence"


PAGE_FAULTS = [
    pytest.param(Reply(body=b"<html><head><title>New look</title></head><body><main></main></body></html>",
                       content_type="text/html"),
                 r"no SVELTE_HYDRATER element .* layout may have changed", id="layout-changed"),
    pytest.param(Reply(status=503, headers={"Retry-After": "0"}), "HTTP 503", id="503"),
    pytest.param(Reply(body=b"<html></html>", delay=3.0), "timed out", id="timeout"),
    pytest.param(Reply.file(PAGES / "date_2026-08-18.html", truncate=5000), "connection failed", id="cut-transfer"),
]


@pytest.mark.parametrize(("reply", "reason"), PAGE_FAULTS)
def test_papers_faults(http_server: HttpServer, http_client: httpx.Client, reply: Reply, reason: str) -> None:
    http_server.route("/papers", reply)
    with pytest.raises(SourceError) as info:
        papers_page(http_server, http_client, timeout_seconds=0.3).fetch(None, {})
    assert info.value.source == "hf_papers"
    assert re.search(reason, info.value.reason), info.value.reason
