"""What the CLI tells an operator when things go wrong (issue 17 item 8), through the real CLI on a real
SQLite file: a source answering 500 from a real HTTP server, a mail server that is not there (a closed
port on 127.0.0.1), a dry run that names why each reader gets nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from httpserver import HttpServer, Reply
from smtp_sink import SmtpSink


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def digest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "DIGEST_SECRET_KEY": "operator-clarity-test-key-0123456789"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([sys.executable, "-m", "digest", "--config", str(cwd / "digest.toml"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180, env=env, check=False)


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as running:
        running.route("/api/daily_papers", Reply(status=500, body=b"upstream broke"))
        yield running


@pytest.fixture
def home(tmp_path: Path, server: HttpServer) -> Path:
    (tmp_path / "digest.toml").write_text(f"""
[database]
url = "sqlite:///{tmp_path / 'digest.sqlite3'}"
[mailer]
backend = "smtp"
[smtp]
host = "127.0.0.1"
port = {closed_port()}
timeout_seconds = 5
[sources.hf_daily]
enabled = true
url = "{server.url('/api/daily_papers')}"
max_retries = 0
""")
    return tmp_path


def test_a_failed_source_and_a_dead_mail_server_are_each_said_once_and_counted(home: Path) -> None:
    run = digest(home, "run")
    assert run.returncode == 1
    assert "source=hf_daily new=0 updated=0 errors=1" in run.stdout
    # The source's error: one line, not a log line and an error line saying the same.
    assert run.stderr.count("500") == 1, run.stderr
    assert "error: hf_daily: " in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: smtp 127.0.0.1:")

    status = digest(home, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    [source] = [line for line in lines if line.lstrip().startswith("hf_daily")]
    assert " error: " in source and "500" in source
    assert "error error" not in status.stdout
    # The run stopped before any message went: it says so, and the three messages are deferred.
    [last] = [line for line in lines if line.startswith("last send:")]
    assert "(did not finish)" in last
    [now] = [line for line in lines if "deliveries of" in line]
    assert "sent=0 failed=0 deferred=3 waiting=0" in now and "cannot start a session" in now
    assert "needing attention: 3" in lines


def test_status_counts_what_failed_and_what_was_deferred(home: Path) -> None:
    config = home / "digest.toml"
    with SmtpSink() as sink:
        config.write_text(re.sub(r"port = \d+", f"port = {sink.port}", config.read_text()))
        sink.add_fault("rcpt", "550 5.1.1 no such mailbox", recipient="ada@example.org")
        sink.add_fault("rcpt", "451 4.3.0 try again later", recipient="grace@example.org")
        run = digest(home, "run")
    assert run.returncode == 1  # a message failed
    assert run.stdout.strip().splitlines()[-1] == "sent=1 skipped=0 failed=1 pending=1"  # the deferred one
    status = digest(home, "status").stdout
    [last] = [line for line in status.splitlines() if line.startswith("last send:")]
    assert last.endswith("sent=1 skipped=0 failed=1") and "did not finish" not in last
    assert ("sent=1 failed=1 deferred=1 waiting=0 unknown=0 (last error: recipient refused: 451 4.3.0 try again "
            "later)") in status
    assert "needing attention: 2" in status


def test_dry_run_says_why_each_reader_gets_nothing(home: Path) -> None:
    (home / "digest.toml").write_text((home / "digest.toml").read_text().replace('backend = "smtp"',
                                                                                  'backend = "file"'))
    digest(home, "run")  # the demo readers get today's issue
    tomorrow = (date.today().weekday() + 1) % 7
    for args in (["w@example.org", "--frequency", "weekly", "--weekday", str(tomorrow)], ["s@example.org"],
                 ["n@example.org", "--keywords", "zzz-no-such-word"], ["y@example.org"]):
        assert digest(home, "subscribers", "add", *args).returncode == 0
    assert digest(home, "subscribers", "update", "s@example.org", "--status", "suppressed").returncode == 0

    plan = digest(home, "send", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    said = dict(line.removeprefix("would skip ").split(": ", 1) for line in plan.stdout.splitlines()
                if line.startswith("would skip "))
    weekday = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")[tomorrow]
    assert said == {"ada@example.org": "already sent", "grace@example.org": "already sent",
                    "alan@example.org": "already sent", "w@example.org": f"not due: weekly, on {weekday}",
                    "s@example.org": "suppressed", "n@example.org": "nothing new matches their preferences"}
    planned = [line for line in plan.stdout.splitlines() if line.startswith("would send ")]
    assert len(planned) == 1 and planned[0].endswith(" to y@example.org")
    assert plan.stdout.strip().splitlines()[-1] == "sent=0 skipped=6 failed=0"
