"""`digest send` killed at any moment: the next runs finish the job, nothing lost, duplicates only in doubt."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from smtp_sink import SmtpSink

from digest.models import Paper, Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from tests.conftest import SEED_FILE, make_settings

pytestmark = pytest.mark.slow

CONNECTIONS = 2


@dataclass
class Setup:
    config: Path
    db: Path
    day: str
    emails: list[str]

    def run(self) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        return subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(self.config), "send", "--date", self.day],
            cwd=self.config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def query(self, sql: str) -> list[tuple]:
        # A plain read: the store's own connections take the write lock at BEGIN.
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(sql).fetchall()

    def deliveries(self) -> dict[str, tuple[str, str, bool]]:
        """email -> (status, message_id, in_doubt)."""
        rows = self.query("SELECT s.email, d.status, d.message_id, d.in_doubt FROM deliveries d "
                          "JOIN subscribers s ON s.id = d.subscriber_id")
        return {email: (status, mid, bool(doubt)) for email, status, mid, doubt in rows}


def prepare(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper], n: int, lease_seconds: float,
            delivery: str = "") -> Setup:
    db = tmp_path / "digest.sqlite3"
    config = tmp_path / "digest.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{db}"

[sources.seed]
path = "{SEED_FILE}"

[mailer]
backend = "smtp"

[smtp]
host = "{sink.host}"
port = {sink.port}
max_connections = {CONNECTIONS}
local_hostname = "client.test"
timeout_seconds = 10

[delivery]
lease_seconds = {lease_seconds}
batch_size = 100
{delivery}

[site]
base_url = "https://digest.example.org"
sender = "Paper Digest <digest@news.example.org>"

[demo]
subscribers_csv = ""

[logging]
level = "WARNING"
""", encoding="utf-8")
    settings = make_settings(tmp_path, database={"url": f"sqlite:///{db}"})
    store = Store(settings.database.url)
    now = datetime.now(UTC)
    store.upsert_papers(seed_papers, now=now)
    emails = [f"reader{i:03d}@example.org" for i in range(n)]
    for email in emails:
        store.add_subscriber(Subscriber(email=email))
    Pipeline(settings, store).tag_pending()
    store.close()
    return Setup(config, db, now.date().isoformat(), emails)


def wait_until(proc: subprocess.Popen[str], condition: Callable[[], bool], timeout: float = 180.0) -> bool:
    """True once ``condition`` holds while ``proc`` still runs; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.005)
    raise AssertionError("the send neither reached the kill point nor finished")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        # Each message is accepted, then the 250 comes 10 ms later: the window in which a kill leaves a
        # message delivered but not yet recorded as sent.
        server.add_fault("after_data", delay=0.01)
        yield server


def test_sigkill_at_any_moment_loses_nothing(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]) -> None:
    # The default lease (5 minutes) and no waiting between runs: a sender killed on this machine is
    # recognised as dead, so each next run takes over its work at once.
    setup = prepare(tmp_path, sink, seed_papers, 500, lease_seconds=300)

    def issues_built(k: int) -> Callable[[], bool]:
        return lambda: setup.query("SELECT count(*) FROM issues")[0][0] >= k

    def more_messages(k: int) -> Callable[[], bool]:
        start = len(sink.messages)
        return lambda: len(sink.messages) >= start + k

    # Kill points: while issues are being built, right at the first message, then after a few, some,
    # and many more messages of the run in hand.
    kill_points: list[tuple[str, Callable[[], Callable[[], bool]]]] = [
        ("building issues", lambda: issues_built(150)),
        ("first message", lambda: more_messages(1)),
        ("after 7 messages", lambda: more_messages(7)),
        ("after 60 messages", lambda: more_messages(60)),
        ("after 133 messages", lambda: more_messages(133)),
        ("after 90 messages", lambda: more_messages(90)),
    ]
    kills: list[str] = []
    for name, make_condition in kill_points:
        proc = setup.run()
        if wait_until(proc, make_condition()):
            proc.send_signal(signal.SIGKILL)
            kills.append(name)
        proc.communicate(timeout=60)

    proc = setup.run()  # the next run finishes the job
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("sent=") and last.endswith("failed=0")

    records = setup.deliveries()
    assert len(records) == 500
    assert {status for status, _, _ in records.values()} == {"sent"}
    counts = sink.counts()
    missing = [e for e in setup.emails if counts[e] == 0]
    assert missing == [], f"never received: {missing[:5]}"
    in_doubt = {email for email, (_, _, doubt) in records.items() if doubt}
    duplicated = {email: counts[email] - 1 for email in setup.emails if counts[email] > 1}
    print(f"\ncrash test: kills={len(kills)} ({', '.join(kills)}) messages={len(sink.messages)} "
          f"in_doubt={len(in_doubt)} duplicated={len(duplicated)} extra_copies={sum(duplicated.values())}")
    assert set(duplicated) <= in_doubt, "a duplicate that no record marks as in doubt"
    # Only messages in flight at a kill can be in doubt: at most one per connection per kill.
    assert len(kills) >= 5
    assert len(in_doubt) <= len(kills) * CONNECTIONS
    for email in setup.emails:
        ids = {m.message_id for m in sink.for_recipient(email)}
        assert ids == {records[email][1]}, f"{email} got Message-IDs {ids}"


def test_sigterm_finishes_messages_in_flight_and_leaves_nothing_in_doubt(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    # A long lease: the re-run must not need it to expire, because a clean stop gives every claim back.
    setup = prepare(tmp_path, sink, seed_papers, 120, lease_seconds=600)
    proc = setup.run()
    start = len(sink.messages)
    assert wait_until(proc, lambda: len(sink.messages) >= start + 20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "finishing the messages in flight" in err
    assert setup.query("SELECT count(*) FROM deliveries WHERE status = 'sending' OR claimed_by IS NOT NULL") == [(0,)]
    stopped_at = len(sink.messages)
    assert stopped_at < 120
    # A stopped run says what it left and fails (issue 16 item 13): it counts every reader.
    [(sent,)] = setup.query("SELECT count(*) FROM deliveries WHERE status = 'sent'")
    assert out.strip().splitlines()[-1] == f"sent={sent} skipped=0 failed=0 pending={120 - sent}"
    assert proc.returncode == 1 and "stopped before the end" in err

    proc = setup.run()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    records = setup.deliveries()
    assert {status for status, _, _ in records.values()} == {"sent"}
    assert not any(doubt for _, _, doubt in records.values())
    assert sorted(sink.counts().values()) == [1] * 120  # every reader exactly once


def test_messages_recovered_as_unknown_are_counted_and_fail_the_run(tmp_path: Path, seed_papers: list[Paper]) -> None:
    with SmtpSink() as slow:
        # The server keeps each message, then takes its time to say so: a kill then leaves it in doubt.
        fault = slow.add_fault("after_data", delay=3.0)
        setup = prepare(tmp_path, slow, seed_papers, 10, lease_seconds=300, delivery="resend_in_doubt = false")
        proc = setup.run()
        assert wait_until(proc, lambda: len(slow.messages) >= 1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        slow.faults.remove(fault)

        proc = setup.run()  # recovers the dead sender's records as unknown, sends the rest
        out, err = proc.communicate(timeout=120)
    [(unknown,)] = setup.query("SELECT count(*) FROM deliveries WHERE status = 'unknown'")
    assert 1 <= unknown <= CONNECTIONS
    # Their readers had their issue already (skipped); what became of it is unknown.
    assert out.strip().splitlines()[-1] == f"sent={10 - unknown} skipped={unknown} failed=0 unknown={unknown}"
    assert proc.returncode == 1 and "--retry-unknown" in err


def test_a_relay_refusing_everybody_suppresses_nobody_and_stops(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    setup = prepare(tmp_path, sink, seed_papers, 50, lease_seconds=300)
    sink.add_fault("rcpt", "550 relay not permitted")
    proc = setup.run()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "the relay is refusing mail" in err and "550 relay not permitted" in err and "Traceback" not in err
    assert out.strip().splitlines()[-1] == "sent=0 skipped=0 failed=0 pending=50"
    assert setup.query("SELECT status, count(*) FROM subscribers GROUP BY status") == [("confirmed", 50)]
    assert setup.query("SELECT status, count(*) FROM deliveries GROUP BY status") == [("pending", 50)]
    assert setup.query("SELECT count(*) FROM address_refusals") == [(0,)]
    refused = len(setup.emails) - setup.query("SELECT count(*) FROM deliveries WHERE attempts = 0")[0][0]
    assert refused < 20  # it stopped early, not after trying everybody

    sink.clear_faults()  # the relay is fixed: the next send delivers everything, once
    proc = setup.run()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "sent=50 skipped=0 failed=0"
    assert sorted(sink.counts().values()) == [1] * 50


def test_a_killed_local_sender_is_recognised_as_dead() -> None:
    from digest.send_engine import is_dead_local_worker, worker_id

    mine = worker_id()
    assert not is_dead_local_worker(mine)  # this very process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # gone and reaped
    host, namespace, _, tag = mine.split(":")
    assert is_dead_local_worker(f"{host}:{namespace}:{child.pid}:{tag}")
    # Anything it cannot be sure about counts as alive, so only the lease can free its records.
    assert not is_dead_local_worker(f"another-host:{namespace}:{child.pid}:{tag}")
    assert not is_dead_local_worker(f"{host}:1:{child.pid}:{tag}")
    assert not is_dead_local_worker(f"{host}:{child.pid}:{tag}")  # the old format, without namespace
    assert not is_dead_local_worker(f"{host}:{namespace}:1:{tag}")  # pid 1 exists


def test_dry_run_through_smtp_config_sends_and_records_nothing(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    setup = prepare(tmp_path, sink, seed_papers, 20, lease_seconds=300)
    proc = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(setup.config), "send", "--dry-run", "--date", setup.day],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    planned = sorted(line.rsplit(" to ", 1)[1] for line in lines if line.startswith("would send "))
    assert planned == setup.emails
    assert lines[-1] == "sent=0 skipped=0 failed=0"
    assert sink.connections == 0 and sink.received() == []
    assert setup.query("SELECT count(*) FROM deliveries") == [(0,)]
