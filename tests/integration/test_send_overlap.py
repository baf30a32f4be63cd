"""Issues built while the first ones are delivered (issue 23): a send starts delivering once its first
chunk of readers is stored, picks up every later chunk, and stays safe to stop or kill mid-build.

The order is observed, not timed: the store below holds the building of the last chunk until the
database records a message as sent. Building everything first could never get there: the run would
wait for its own end (and the gate gives up after a minute, failing the test).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from smtp_sink import SmtpSink

from digest.models import Paper, Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from tests.conftest import NOW, make_settings

DAY = NOW.date()
READERS = 350  # four chunks of the builder (by subscriber id, 100 a chunk)
REPO = Path(__file__).resolve().parents[2]


def _sent(db: Path) -> int:
    # A plain read beside the send (the store's own connections take the write lock at BEGIN).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()[0])


class GatedStore(Store):
    """A real store whose builder, before reading the chunk of reader ``gate_id`` (the last one unless
    told), waits for a message recorded as sent, or calls ``on_gate`` instead."""

    gate_id = 0
    db: Path
    opened_by_data: bool | None = None
    on_gate: Callable[[], None] | None = None

    def issue_histories(self, subscriber_ids: Sequence[int], issue_date: date,
                        papers_since: datetime | None = None) -> Any:
        if self.gate_id in subscriber_ids and self.on_gate is not None:
            self.on_gate()
        elif self.gate_id in subscriber_ids and self.opened_by_data is None:
            deadline = time.monotonic() + 60
            while _sent(self.db) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.opened_by_data = _sent(self.db) > 0
        return super().issue_histories(subscriber_ids, issue_date, papers_since)


class Recorded:
    """A progress that keeps what it was told."""

    def __init__(self) -> None:
        self.started: list[int | None] = []
        self.grown = 0
        self.advanced = 0
        self.lock = threading.Lock()

    def start(self, total: int | None) -> None:
        self.started.append(total)

    def grow(self, n: int) -> None:
        self.grown += n

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.advanced += n


def _world(tmp_path: Path, sink: SmtpSink, papers: list[Paper], connections: int, workers: int,
           ) -> tuple[Pipeline, GatedStore]:
    settings = make_settings(
        tmp_path, mailer={"backend": "smtp"},
        smtp={"host": sink.host, "port": sink.port, "local_hostname": "client.test", "timeout_seconds": 10,
              "max_connections": connections},
        delivery={"workers": workers, "batch_size": 50},
        site={"base_url": "https://digest.example.org", "sender": "Paper Digest <digest@news.example.org>"})
    store = GatedStore(settings.database.url)
    store.db = Path(settings.database.url.split("///", 1)[1])
    store.upsert_papers(papers, now=NOW - timedelta(hours=2))
    for k in range(READERS):
        store.add_subscriber(Subscriber(email=f"reader{k:03d}@example.org"))
    store.gate_id = max(s.id or 0 for s in store.iter_subscribers())
    pipeline = Pipeline(settings, store, clock=lambda: NOW)
    pipeline.tag_pending()
    return pipeline, store


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.mark.parametrize(("connections", "workers"), [(1, 0), (2, 0), (2, 1)],
                         ids=["one-connection", "threads", "render-process"])
def test_the_first_chunk_is_delivered_before_the_last_is_built(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper], connections: int, workers: int
) -> None:
    pipeline, store = _world(tmp_path, sink, seed_papers, connections, workers)
    progress = Recorded()
    summary = pipeline.send(DAY, progress=progress)
    assert store.opened_by_data is True, "nothing was delivered before the last chunk was built"
    assert (summary.sent, summary.skipped, summary.failed, summary.pending) == (READERS, 0, 0, 0)
    assert not summary.incomplete
    assert sorted(sink.counts().values()) == [1] * READERS
    # The bar started with what was pending (nothing) and grew by each chunk as it was stored.
    assert progress.started == [0]
    assert (progress.grown, progress.advanced) == (READERS, READERS)
    assert store.delivery_counts(DAY) == {"sent": READERS}
    # A second run finds everyone served: skipped once each, nothing sent twice.
    again = pipeline.send(DAY)
    assert (again.sent, again.skipped, again.pending) == (0, READERS, 0)
    assert len(sink.messages) == READERS
    store.close()


def test_a_large_send_builds_in_a_process_of_its_own(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]) -> None:
    pipeline, store = _world(tmp_path, sink, seed_papers, 2, 0)
    pipeline.build_process_from = 0  # as a send of many readers does
    # The daemon's way first: the readers it names, listed; the others wait.
    few = [sub for sub in store.iter_subscribers() if sub.id is not None and sub.id % 7 == 0]
    first = pipeline.send(DAY, subscribers=lambda: iter(few))
    assert (first.sent, first.skipped, first.pending) == (len(few), 0, 0)
    assert store.delivery_counts(DAY) == {"sent": len(few)}
    progress = Recorded()
    summary = pipeline.send(DAY, progress=progress)
    rest = READERS - len(few)
    assert (summary.sent, summary.skipped, summary.failed, summary.pending) == (rest, len(few), 0, 0)
    assert sorted(sink.counts().values()) == [1] * READERS
    assert progress.started == [0] and (progress.grown, progress.advanced) == (rest, rest)
    store.close()


def test_a_stop_during_the_build_ends_both_and_the_next_run_finishes(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    pipeline, store = _world(tmp_path, sink, seed_papers, 2, 0)
    # SIGTERM (as digest send has it) arrives while the second chunk is being built.
    store.gate_id = 150
    store.on_gate = pipeline.stop_requested.set
    first = pipeline.send(DAY)
    assert first.stopped and first.incomplete
    built = sum(store.delivery_counts(DAY).values())
    assert built < READERS  # the building stopped too, after the chunk in hand
    assert first.sent + first.pending == built  # every record built is sent or counted as pending
    with sqlite3.connect(f"file:{store.db}?mode=ro", uri=True) as conn:
        left = conn.execute("SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL OR status = 'sending'")
        assert left.fetchone()[0] == 0  # every claim given back: the next run need not wait out a lease

    pipeline.stop_requested.clear()
    store.on_gate = None
    store.opened_by_data = False  # no gate on the next run
    second = pipeline.send(DAY)
    assert (second.sent, second.skipped, second.pending) == (READERS - first.sent, first.sent, 0)
    assert sorted(sink.counts().values()) == [1] * READERS
    store.close()


def test_a_stop_with_the_builder_in_a_process_leaves_nothing_claimed(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    pipeline, store = _world(tmp_path, sink, seed_papers, 2, 0)
    pipeline.build_process_from = 0

    def stop_at_the_first_message() -> None:
        sink.wait_for(1, timeout=60)
        pipeline.stop_requested.set()

    watcher = threading.Thread(target=stop_at_the_first_message)
    watcher.start()
    first = pipeline.send(DAY)
    watcher.join()
    assert first.stopped and first.incomplete
    assert first.sent + first.pending == sum(store.delivery_counts(DAY).values())
    with sqlite3.connect(f"file:{store.db}?mode=ro", uri=True) as conn:
        left = conn.execute("SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL OR status = 'sending'")
        assert left.fetchone()[0] == 0
    pipeline.stop_requested.clear()
    second = pipeline.send(DAY)
    assert (second.sent, second.skipped, second.pending) == (READERS - first.sent, first.sent, 0)
    assert sorted(sink.counts().values()) == [1] * READERS
    store.close()


# ---- killed mid-build: a real `digest send` process, held in the builder until the kill -------------

_HELD_SEND = """
import sys, threading
from datetime import date
from digest.config import load_settings
from digest.pipeline import Pipeline
from digest.store import Store

last = int(sys.argv[3])
if sys.argv[4] == "process":
    Pipeline.build_process_from = 0  # the builder is a process: not held, killed with its sender

class Held(Store):
    def issue_histories(self, ids, *args, **kwargs):
        if last in ids:
            threading.Event().wait()  # the test kills this process while it waits here
        return super().issue_histories(ids, *args, **kwargs)

settings = load_settings(sys.argv[1])
Pipeline(settings, Held(settings.database.url)).send(date.fromisoformat(sys.argv[2]))
"""


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("builder", ["thread", "process"])
def test_killed_mid_build_the_next_run_delivers_everyone_exactly_once(
    tmp_path: Path, seed_papers: list[Paper], builder: str
) -> None:
    with SmtpSink() as sink:
        sink.add_fault("after_data", delay=0.01)  # a window in which a kill leaves a message in doubt
        db = tmp_path / "digest.sqlite3"
        config = tmp_path / "digest.toml"
        config.write_text(f"""
[database]
url = "sqlite:///{db}"

[mailer]
backend = "smtp"

[smtp]
host = "{sink.host}"
port = {sink.port}
max_connections = 2
local_hostname = "client.test"
timeout_seconds = 10

[delivery]
batch_size = 50

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
        store.upsert_papers(seed_papers, now=datetime.now(UTC) - timedelta(hours=2))  # `digest send` runs now
        emails = [f"reader{k:03d}@example.org" for k in range(READERS)]
        for email in emails:
            store.add_subscriber(Subscriber(email=email))
        last = max(s.id or 0 for s in store.iter_subscribers())
        Pipeline(settings, store).tag_pending()
        store.close()
        day = datetime.now(UTC).date().isoformat()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        held = subprocess.Popen([sys.executable, "-c", _HELD_SEND, str(config), day, str(last), builder], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(sink.messages) < 30 and held.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert held.poll() is None, held.communicate()[1]
        assert len(sink.messages) >= 30, "the held send delivered nothing"
        children = _children(held.pid)  # its render process, its build process
        assert len(children) == (2 if builder == "process" else 1)
        held.send_signal(signal.SIGKILL)
        held.communicate(timeout=60)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            [(issues,)] = conn.execute("SELECT count(*) FROM issues").fetchall()
        if builder == "thread":
            assert 30 <= issues < READERS  # killed while delivering the first chunks, before the last was built
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(pid) for pid in children), "a worker outlived its killed sender"

        rerun = subprocess.run([sys.executable, "-m", "digest", "--config", str(config), "send", "--date", day],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            records = {email: (status, bool(doubt)) for email, status, doubt in conn.execute(
                "SELECT s.email, d.status, d.in_doubt FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id")}
        assert len(records) == READERS and {status for status, _ in records.values()} == {"sent"}
        counts = sink.counts()
        assert [e for e in emails if counts[e] == 0] == []
        duplicated = {e for e in emails if counts[e] > 1}
        # Only a message in flight at the kill may come twice, and its record says so.
        assert duplicated <= {e for e, (_, doubt) in records.items() if doubt}
        assert len(duplicated) <= 2
