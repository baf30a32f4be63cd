"""Offline replay: every HTTP source also reads ``file:`` URLs (one recorded response, or a folder of
them by listing day) through the same parser and the same merge as HTTP; ``run --date D`` fetches day D."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpserver import HttpServer, Reply

from digest.config import Settings
from digest.errors import SourceError
from digest.models import FetchResult
from digest.sources import build_sources
from digest.sources.arxiv import parse_atom

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "sources"
HF_DAY = FIXTURES / "hf_daily_papers" / "2026-08-18.json"
HF_PAGE = FIXTURES / "hf_papers_html" / "date_2026-08-18.html"
ARXIV_PAGE = FIXTURES / "arxiv_api" / "personal-news-feed_cat_cs.AI_OR_cs.LG_OR_cs.CL_m25_2026-08-02.xml"
RSS_FEED = FIXTURES / "arxiv_rss" / "distill_arxiv_cs_lg_2026-04-27_trimmed3items.xml"
DAY = date(2026, 8, 18)


def _settings(**sources: dict[str, Any]) -> Settings:
    off = {name: {"enabled": False} for name in ("seed", "hf_daily", "hf_papers", "arxiv", "arxiv_rss")}
    fast = {"enabled": True, "max_retries": 0, "timeout_seconds": 2.0}
    return Settings.model_validate({"sources": {**off, **{n: {**fast, **s} for n, s in sources.items()}}})


def _fetch(settings: Settings, name: str, day: date | None = DAY) -> FetchResult:
    with httpx.Client() as client:
        (source,) = build_sources(settings, client, [name])
        return source.fetch(day, {})


@pytest.mark.parametrize(("name", "path", "recording"), [
    ("hf_daily", "/api/daily_papers", HF_DAY),
    ("hf_papers", "/papers/date/2026-08-18", HF_PAGE),
    ("arxiv_rss", "/rss/cs.LG", RSS_FEED),
])
def test_a_recorded_file_gives_what_http_gives(http_server: HttpServer, name: str, path: str,
                                               recording: Path) -> None:
    http_server.route(path, Reply.file(recording))
    base = http_server.url(path.split("/date/")[0].removesuffix("/cs.LG"))
    over_http = _fetch(_settings(**{name: {"url": base}}), name)
    replayed = _fetch(_settings(**{name: {"url": recording.as_uri()}}), name)
    assert replayed.papers and replayed.papers == over_http.papers
    assert replayed.state["url"] == recording.resolve().as_uri()


def test_arxiv_replays_one_recorded_page_whole() -> None:
    # Its papers were submitted months before "now": the live window would keep none of them.
    replayed = _fetch(_settings(arxiv={"url": ARXIV_PAGE.as_uri()}), "arxiv", day=None)
    assert replayed.papers == parse_atom(ARXIV_PAGE.read_bytes()).papers
    assert len(replayed.papers) == 25
    capped = _fetch(_settings(arxiv={"url": ARXIV_PAGE.as_uri(), "max_results": 5}), "arxiv", day=None)
    assert [p.id for p in capped.papers] == [p.id for p in replayed.papers[:5]]


@pytest.fixture
def days(tmp_path: Path) -> Path:
    folder = tmp_path / "hf_daily"
    folder.mkdir()
    for day in ("2026-08-18", "2026-08-19", "2026-08-20"):
        shutil.copy(REPO / "tests" / "fixtures" / "days" / f"{day}.json", folder / f"{day}.json")
    (folder / "notes.txt").write_text("not a day\n")
    return folder


def test_a_folder_is_read_by_listing_day_latest_without_one(days: Path) -> None:
    settings = _settings(hf_daily={"url": days.as_uri() + "/"})
    for day, count in ((date(2026, 8, 19), 26), (date(2026, 8, 18), 29)):
        assert len(_fetch(settings, "hf_daily", day).papers) == count
    latest = _fetch(settings, "hf_daily", None)
    assert len(latest.papers) == 15 and latest.state["date"] == "2026-08-20"


def test_relative_file_urls_are_read_from_the_working_directory(days: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(days.parent)
    assert len(_fetch(_settings(hf_daily={"url": "file:hf_daily"}), "hf_daily", date(2026, 8, 20)).papers) == 15


@pytest.mark.parametrize(("url", "day", "reason"), [
    ("{days}/", date(2026, 8, 1), r"^no recorded response for 2026-08-01 in .*/hf_daily/ "
                                  r"\(it has 3 days: 2026-08-18 to 2026-08-20\)$"),
    ("{days}/missing/", DAY, r"^recorded folder not found: .*/hf_daily/missing \(from url 'file://.*'\)$"),
    ("{days}/2026-08-21.json", DAY, r"^recorded file or folder not found: .*/2026-08-21.json"),
    ("{days}/notes.txt", DAY, r"^invalid JSON \(10 bytes\)"),
    ("file://elsewhere/data", DAY, r"^invalid URL 'file://elsewhere/data': a file URL names a local path"),
])
def test_missing_files_folders_and_days_are_one_line(days: Path, url: str, day: date, reason: str) -> None:
    target = url.format(days=days.as_uri()) if "{days}" in url else url
    with pytest.raises(SourceError) as caught:
        _fetch(_settings(hf_daily={"url": target}), "hf_daily", day)
    assert caught.value.source == "hf_daily" and "\n" not in caught.value.reason
    assert re.search(reason, caught.value.reason), caught.value.reason


def test_a_folder_without_dated_files_says_how_to_name_them(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no recorded days in .* \(expected files named YYYY-MM-DD\.ext\)$"):
        _fetch(_settings(arxiv_rss={"url": tmp_path.as_uri()}), "arxiv_rss")


# ---- through the CLI ----------------------------------------------------------------------------


def digest(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "digest", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    if check and proc.returncode != 0:
        raise AssertionError(f"digest {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


SHIPPED = REPO / "digest" / "defaults"


@pytest.fixture
def replay_dir(tmp_path: Path) -> Path:
    """An empty folder (its state goes there): config/replay.toml and examples/replay/ are the copies
    shipped in the package."""
    return tmp_path


def test_the_shipped_replay_config_fetches_real_days_offline(replay_dir: Path) -> None:
    assert digest(replay_dir, "--config", "config/replay.toml", "fetch").stdout == (
        "source=hf_daily new=15 updated=0 errors=0\n")
    assert digest(replay_dir, "--config", "config/replay.toml", "fetch", "--date", "2026-08-18").stdout == (
        "source=hf_daily new=29 updated=0 errors=0\n")
    missing = digest(replay_dir, "--config", "config/replay.toml", "fetch", "--date", "2026-08-01", check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert [line for line in missing.stderr.splitlines() if line.startswith("error:")] == [
        f"error: hf_daily: no recorded response for 2026-08-01 in {SHIPPED / 'replay' / 'hf_daily'}/ "
        "(it has 3 days: 2026-08-18 to 2026-08-20)"]
    # Every source's shipped recordings replay too.
    (replay_dir / "config").mkdir()
    for name, count in (("arxiv", 25), ("arxiv_rss", 3)):
        toml = (SHIPPED / "replay.toml").read_text()
        section = f"[sources.{name}]"
        head, rest = toml.split(section, 1)
        enabled = rest.replace("enabled = false", "enabled = true", 1)
        (replay_dir / "config" / "all.toml").write_text(head + section + enabled)
        proc = digest(replay_dir, "--config", "config/all.toml", "fetch", "--source", name)
        assert proc.stdout == f"source={name} new={count} updated=0 errors=0\n"


def test_a_replay_config_or_recordings_of_your_own_take_the_place_of_the_shipped_ones(replay_dir: Path) -> None:
    days = replay_dir / "examples" / "replay" / "hf_daily"
    days.mkdir(parents=True)
    shutil.copy(HF_DAY, days / "2026-09-01.json")
    assert digest(replay_dir, "--config", "config/replay.toml", "fetch").stdout == (
        "source=hf_daily new=29 updated=0 errors=0\n")
    (replay_dir / "config").mkdir()
    (replay_dir / "config" / "replay.toml").write_text('[sources.seed]\nenabled = false\n')
    assert digest(replay_dir, "--config", "config/replay.toml", "fetch").stdout == ""
    missing = digest(replay_dir, "--config", "config/nothing.toml", "fetch", check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: config file not found: config/nothing.toml"


def test_sources_merge_the_same_way_replayed(replay_dir: Path) -> None:
    # The API day and the page of the same day list the same papers: one record each, both sources.
    pages = replay_dir / "pages"
    pages.mkdir()
    shutil.copy(HF_PAGE, pages / "2026-08-18.html")
    (replay_dir / "merge.toml").write_text(
        'database.url = "sqlite:///var/m.sqlite3"\n[sources.seed]\nenabled = false\n'
        '[sources.hf_daily]\nenabled = true\nurl = "file:examples/replay/hf_daily"\n'
        '[sources.hf_papers]\nenabled = true\nurl = "file:pages"\n')
    proc = digest(replay_dir, "--config", "merge.toml", "fetch", "--date", "2026-08-18")
    assert proc.stdout == ("source=hf_daily new=29 updated=0 errors=0\n"
                           "source=hf_papers new=0 updated=29 errors=0\n")
    papers = [json.loads(line) for line in digest(replay_dir, "--config", "merge.toml", "papers", "list",
                                                  "--json").stdout.splitlines()]
    assert len(papers) == 29
    assert all(sorted(p["sources"]) == ["hf_daily", "hf_papers"] for p in papers), papers[0]


def test_run_with_a_date_fetches_that_listing_day_over_http(tmp_path: Path, http_server: HttpServer) -> None:
    http_server.route("/api/daily_papers", Reply.file(HF_DAY), query={"date": "2026-08-18"})
    http_server.route("/api/daily_papers", Reply(status=500))  # "the latest": must not be asked for
    (tmp_path / "c.toml").write_text(
        '[sources.seed]\nenabled = false\n'
        f'[sources.hf_daily]\nenabled = true\nmax_retries = 0\nurl = "{http_server.url("/api/daily_papers")}"\n')
    proc = digest(tmp_path, "--config", "c.toml", "run", "--date", "2026-08-18", "--force")
    assert proc.stdout.splitlines()[0] == "source=hf_daily new=29 updated=0 errors=0"
    assert [r.query for r in http_server.requests] == [{"date": "2026-08-18"}]


def test_run_with_a_date_reads_that_recorded_day(replay_dir: Path) -> None:
    proc = digest(replay_dir, "--config", "config/replay.toml", "run", "--date", "2026-08-19", "--force")
    assert proc.stdout.splitlines()[0] == "source=hf_daily new=26 updated=0 errors=0"
