"""All HTTP sources built from one config, against one real 127.0.0.1 server: faults stay isolated."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
from httpserver import HttpServer, Reply

from digest.config import Settings
from digest.errors import SourceError
from digest.models import FetchResult
from digest.sources import build_sources

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"


def test_one_failing_source_leaves_the_others_alone(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/api/daily_papers", Reply.file(FIXTURES / "hf_daily_papers/2026-08-18.json"))
    http_server.route("/papers/date/2026-08-18", Reply.file(FIXTURES / "hf_papers_html/date_2026-08-18.html"))
    http_server.route("/api/query", Reply(status=500))
    http_server.route("/rss/cs.LG", Reply.file(FIXTURES / "arxiv_rss/distill_arxiv_cs_lg_2026-04-27_trimmed3items.xml"))
    fast = {"enabled": True, "max_retries": 0, "timeout_seconds": 2.0}
    settings = Settings.model_validate({
        "sources": {
            "seed": {"enabled": False},
            "hf_daily": {**fast, "url": http_server.url("/api/daily_papers")},
            "hf_papers": {**fast, "url": http_server.url("/papers")},
            "arxiv": {**fast, "url": http_server.url("/api/query"), "delay_seconds": 0.0},
            "arxiv_rss": {**fast, "url": http_server.url("/rss")},
        },
        "http": {"contact": "ops@example.org"},
    })
    results: dict[str, FetchResult] = {}
    failures: dict[str, str] = {}
    for source in build_sources(settings, http_client):
        try:
            results[source.name] = source.fetch(date(2026, 8, 18), {})
        except SourceError as err:
            failures[err.source] = err.reason
    assert sorted(results) == ["arxiv_rss", "hf_daily", "hf_papers"]
    assert list(failures) == ["arxiv"] and failures["arxiv"].startswith("HTTP 500 Internal Server Error")
    assert [p.id for p in results["hf_daily"].papers] == [p.id for p in results["hf_papers"].papers]
    assert len(results["arxiv_rss"].papers) == 3
    agents = {r.headers["user-agent"] for r in http_server.requests}
    assert len(agents) == 1 and "ops@example.org" in agents.pop()
