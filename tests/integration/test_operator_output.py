"""Operator output never passes a reader's or a source's control characters to the terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digest.models import Paper, Subscriber
from digest.store import Store
from digest.terminal import SafeFormatter, printable
from tests.conftest import NOW

# What an attacker posted as keywords: set the terminal title, then fake a second subscriber row.
TITLE = "\x1b]0;pwned\x07"
FAKE_ROW = "x\nmallory@example.org\tconfirmed\tdaily 08:00 UTC\t(all topics)"
CONTROL = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))] + ["\u202e", "\u2066", "\u2028"]


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "digest", "--config", "digest.toml", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def _clean(text: str) -> bool:
    return not any(c in text for c in CONTROL if c not in "\n\t")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    seed = tmp_path / f"seed-{TITLE}.txt"  # a source whose errors quote a hostile name
    (tmp_path / "digest.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "d.sqlite3"}"\n[demo]\nsubscribers_csv = ""\n'
        f'[sources.seed]\npath = {json.dumps(str(seed))}\n')
    return tmp_path


def test_printable_escapes_every_control_character() -> None:
    for char in CONTROL:
        shown = printable(f"a{char}b")
        assert shown.startswith("a\\") and shown.endswith("b") and char not in shown, repr(char)
    assert printable("Ünïcode — fine, 日本語") == "Ünïcode — fine, 日本語"


def test_subscribers_papers_and_status_print_escaped(home: Path) -> None:
    store = Store(f"sqlite:///{home / 'd.sqlite3'}")
    store.add_subscriber(Subscriber(email="eve@example.org", keywords=(TITLE + "diffusion", FAKE_ROW)), NOW)
    store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    store.upsert_papers([Paper(id="2408.00001", title=f"A {TITLE} title\r\n2408.9\tfake", sources=("seed",))], NOW)
    store.record_fetch("hf_daily", ok=False, error=f"HTTP 500: {TITLE}\nsource=seed new=999", now=NOW)

    listed = _cli(home, "subscribers", "list")
    assert listed.returncode == 0, listed.stderr
    assert _clean(listed.stdout)
    rows = listed.stdout.splitlines()
    assert len(rows) == 2 and all(row.count("\t") == 3 for row in rows)
    assert "\\x1b]0;pwned\\x07diffusion" in listed.stdout and "mallory" not in listed.stdout.split("\t")[0]
    # JSON keeps the value exactly (escaped by JSON itself).
    as_json = [json.loads(line) for line in _cli(home, "subscribers", "list", "--json").stdout.splitlines()]
    assert FAKE_ROW in [k for s in as_json for k in s["keywords"]]

    papers = _cli(home, "papers", "list")
    assert _clean(papers.stdout) and len(papers.stdout.splitlines()) == 1
    status = _cli(home, "status")
    assert _clean(status.stdout) and "source=seed new=999" not in status.stdout.splitlines()
    assert "HTTP 500: \\x1b]0;pwned\\x07\\x0asource=seed new=999" in status.stdout


def test_errors_and_log_lines_print_escaped(home: Path) -> None:
    fetched = _cli(home, "-v", "fetch", "--source", "seed")
    assert fetched.returncode == 1
    assert "seed-" in fetched.stderr and "\\x1b]0;pwned\\x07" in fetched.stderr
    assert _clean(fetched.stderr) and _clean(fetched.stdout)


def test_log_formatter_keeps_one_event_on_one_line() -> None:
    record = logging.LogRecord("digest", logging.ERROR, __file__, 1, "refused subscriber=%s reason=%s",
                               ("eve@example.org", f"550 {TITLE}\n2026-01-01 INFO digest: all good"), None)
    line = SafeFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and "\x1b" not in line and "\\x1b]0;pwned\\x07\\x0a2026-01-01" in line
