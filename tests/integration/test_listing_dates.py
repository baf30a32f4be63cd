"""``papers list`` shows the day of the listing that carried a paper, not when it was fetched: through the
CLI, against a real HTTP server serving recorded responses (and the same recordings replayed from files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from httpserver import HttpServer, Reply

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "sources"
HF_DAYS = FIXTURES / "hf_daily_papers"
HF_PAGE = FIXTURES / "hf_papers_html" / "date_2026-08-18.html"
ARXIV_PAGE = FIXTURES / "arxiv_api" / "personal-news-feed_cat_cs.AI_OR_cs.LG_OR_cs.CL_m25_2026-08-02.xml"
RSS_FEED = FIXTURES / "arxiv_rss" / "distill_arxiv_cs_lg_2026-04-27_trimmed3items.xml"
SEED = REPO / "digest" / "defaults" / "hf_papers_search.txt"


def digest(cwd: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "digest", "--config", "c.toml", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    assert proc.returncode == 0, f"digest {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def listed(cwd: Path, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in digest(cwd, "papers", "list", "--json", *args).splitlines()]


def config(cwd: Path, **sources: str) -> None:
    """A config with only ``sources`` enabled (name -> url), fast to fail."""
    text = 'database.url = "sqlite:///var/d.sqlite3"\n[sources.seed]\nenabled = false\n'
    for name, url in sources.items():
        text += f'[sources.{name}]\nenabled = true\nmax_retries = 0\ntimeout_seconds = 5.0\nurl = "{url}"\n'
        if name == "arxiv":
            text += 'delay_seconds = 0.0\ncategories = ["cs.AI", "cs.LG", "cs.CL"]\n'
    (cwd / "c.toml").write_text(text)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def test_a_past_hf_day_is_listed_on_that_day_not_on_the_day_it_was_fetched(
        tmp_path: Path, http_server: HttpServer) -> None:
    http_server.route("/api/daily_papers", Reply.file(HF_DAYS / "2026-08-18.json"), query={"date": "2026-08-18"})
    http_server.route("/api/daily_papers", Reply.file(HF_DAYS / "2026-08-19.json"))  # the latest day
    config(tmp_path, hf_daily=http_server.url("/api/daily_papers"))

    assert digest(tmp_path, "fetch", "--date", "2026-08-18") == "source=hf_daily new=29 updated=0 errors=0\n"
    papers = listed(tmp_path)
    assert len(papers) == 29
    assert {p["listed_on"] for p in papers} == {"2026-08-18"}
    assert {p["first_seen"][:10] for p in papers} == {today()} != {"2026-08-18"}
    # The text lines: id, listing day, topics, title.
    rows = [line.split("\t") for line in digest(tmp_path, "papers", "list").splitlines()]
    assert len(rows) == 29 and all(len(row) == 4 and row[1] == "2026-08-18" for row in rows)

    # The latest day (2026-08-19) fetched after it: newest listing first, --since by listing day.
    assert digest(tmp_path, "fetch").startswith("source=hf_daily new=")
    newer = listed(tmp_path, "--since", "2026-08-19")
    assert newer and {p["listed_on"] for p in newer} == {"2026-08-19"}
    everything = listed(tmp_path)
    days = [p["listed_on"] for p in everything]
    assert days == sorted(days, reverse=True) and days[-1] == "2026-08-18"
    assert {p["id"] for p in newer} == {p["id"] for p in everything if p["listed_on"] == "2026-08-19"}


def test_a_paper_keeps_the_first_listing_that_carried_it(tmp_path: Path, http_server: HttpServer) -> None:
    # The page of 2026-08-18 lists the same papers as the API's day: fetched a day later they stay on 08-18.
    http_server.route("/api/daily_papers", Reply.file(HF_DAYS / "2026-08-18.json"))
    http_server.route("/papers/date/2026-08-19", Reply.file(HF_PAGE))
    config(tmp_path, hf_daily=http_server.url("/api/daily_papers"), hf_papers=http_server.url("/papers"))
    digest(tmp_path, "fetch", "--source", "hf_daily", "--date", "2026-08-18")
    digest(tmp_path, "fetch", "--source", "hf_papers", "--date", "2026-08-19")
    papers = listed(tmp_path)
    assert len(papers) == 29 and all(sorted(p["sources"]) == ["hf_daily", "hf_papers"] for p in papers)
    assert {p["listed_on"] for p in papers} == {"2026-08-18"}


@pytest.mark.parametrize("command", ["fetch", "run"])
def test_an_arxiv_day_is_listed_on_the_day_asked_for(tmp_path: Path, http_server: HttpServer, command: str) -> None:
    http_server.route("/api/query", Reply.file(ARXIV_PAGE))
    config(tmp_path, arxiv=http_server.url("/api/query"))
    extra = ["--force"] if command == "run" else []
    assert digest(tmp_path, command, "--date", "2026-07-30", *extra).startswith("source=arxiv new=")
    papers = listed(tmp_path)
    assert papers and {p["listed_on"] for p in papers} == {"2026-07-30"}
    assert {p["first_seen"][:10] for p in papers} == {today()}


def test_the_arxiv_feed_is_listed_on_its_announcement_day(tmp_path: Path, http_server: HttpServer) -> None:
    # The feed holds only the latest announcement: whatever day is asked for, its papers are listed on
    # the day it announced them (pubDate), and replayed from a file exactly the same.
    http_server.route("/rss/cs.LG", Reply.file(RSS_FEED))
    config(tmp_path, arxiv_rss=http_server.url("/rss"))
    assert digest(tmp_path, "fetch", "--date", "2026-05-04") == "source=arxiv_rss new=3 updated=0 errors=0\n"
    over_http = {p["id"]: p["listed_on"] for p in listed(tmp_path)}
    assert set(over_http.values()) == {"2026-04-27"}

    replayed = tmp_path / "replayed"
    (replayed / "feeds").mkdir(parents=True)
    shutil.copy(RSS_FEED, replayed / "feeds" / "2026-05-04.xml")
    config(replayed, arxiv_rss="file:feeds/")
    digest(replayed, "fetch", "--date", "2026-05-04")
    assert {p["id"]: p["listed_on"] for p in listed(replayed)} == over_http


def test_replayed_days_are_listed_as_over_http(tmp_path: Path, http_server: HttpServer) -> None:
    http_server.route("/api/daily_papers", Reply.file(HF_DAYS / "2026-08-19.json"), query={"date": "2026-08-19"})
    config(tmp_path, hf_daily=http_server.url("/api/daily_papers"))
    digest(tmp_path, "fetch", "--date", "2026-08-19")
    over_http = {p["id"]: p["listed_on"] for p in listed(tmp_path)}

    replayed = tmp_path / "replayed"
    (replayed / "days").mkdir(parents=True)
    for day in ("2026-08-18", "2026-08-19"):
        shutil.copy(HF_DAYS / f"{day}.json", replayed / "days" / f"{day}.json")
    config(replayed, hf_daily="file:days/")
    digest(replayed, "fetch", "--date", "2026-08-19")
    assert {p["id"]: p["listed_on"] for p in listed(replayed)} == over_http
    assert set(over_http.values()) == {"2026-08-19"}


def test_the_seed_file_is_listed_on_the_day_given_else_the_day_it_runs(tmp_path: Path) -> None:
    shutil.copy(SEED, tmp_path / "seed.txt")
    (tmp_path / "c.toml").write_text('database.url = "sqlite:///var/d.sqlite3"\n'
                                     '[sources.seed]\nenabled = true\npath = "seed.txt"\n')
    digest(tmp_path, "fetch", "--date", "2026-08-01")
    assert {p["listed_on"] for p in listed(tmp_path)} == {"2026-08-01"}

    (tmp_path / "c.toml").write_text('database.url = "sqlite:///var/other.sqlite3"\n'
                                     '[sources.seed]\nenabled = true\npath = "seed.txt"\n')
    digest(tmp_path, "fetch")
    assert {p["listed_on"] for p in listed(tmp_path)} == {today()}
