"""The fast send loop: batched building, rendering in a separate process, one commit per message; the
emails are the ones the naive path makes, and no more records are "sending" than messages in flight."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import time_machine

from digest.compose import Composer
from digest.config import Settings
from digest.mail.memory import MemoryMailer
from digest.models import OutgoingMessage, SendResult
from digest.pipeline import Pipeline
from digest.store import Store
from tests.conftest import make_settings
from tests.samples import make_papers, make_subscribers, prepare_store

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
DAY = date(2026, 11, 27)
READERS = 150


def workload(tmp_path: Path, name: str, **sections: Any) -> tuple[Settings, Store]:
    folder = tmp_path / name
    folder.mkdir()
    settings = make_settings(folder, delivery={"batch_size": 40, **sections.pop("delivery", {})}, **sections)
    papers = make_papers(120)
    authors = sorted({a for p in papers for a in p.authors[:2]})
    store, count = prepare_store(settings, 120, make_subscribers(READERS, list(settings.enabled_topics), authors))
    assert count == READERS
    return settings, store


class TwoAtOnce(MemoryMailer):
    """Keeps every message, from two sender threads."""

    concurrency = 2

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> SendResult:
        with self.lock:
            return super().send(message)


@pytest.fixture
def stores() -> Iterator[list[Store]]:
    opened: list[Store] = []
    yield opened
    for store in opened:
        store.close()


# A signed link carries the second it was signed in (payload.timestamp.signature).
# Signed tokens: a JSON string payload (an address, or an issue id) base64-encoded starts with "I".
_TOKEN = re.compile(r"(I[A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Every database makes its own random Message-IDs (and the MIME boundary follows the id).
_RANDOM = re.compile(r"(<digest\.\d+\.)[0-9a-f]+@|(=_digest_)[0-9a-f]+")


def canonical(data: bytes) -> list[str]:
    """A message's headers and decoded parts, with the signing time taken out of its links and the
    random part out of its Message-ID."""
    message = message_from_bytes(data, policy=policy.default)
    parts = [_RANDOM.sub(lambda m: (m[1] + "R@") if m[1] else m[2] + "R", f"{name}: {value}")
             for name, value in message.items()]
    parts += [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
    return [_TOKEN.sub(r"\1.T.S", part) for part in parts]


@time_machine.travel(NOW, tick=False)  # links are signed with the time: render every email in the same second
def test_fast_and_naive_paths_make_the_same_emails_for_stored_issues(tmp_path: Path, stores: list[Store]) -> None:
    settings, store = workload(tmp_path, "identity")
    stores.append(store)
    pipeline = Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: NOW)
    summary = pipeline.send(DAY)
    assert summary.sent > 100
    # Read back as the send loop reads them: a batch at a time, one Paper object per paper, so readers
    # of the same papers share a rendered body and only their address and links are filled in.
    con = sqlite3.connect(settings.database.url.split("///", 1)[1])
    rows = con.execute("SELECT issue_id, message_id FROM deliveries ORDER BY id").fetchall()
    con.close()
    issues = store.load_issues([r[0] for r in rows], pipeline.labels, {})
    bodies = {}
    reference = Composer(settings, pipeline.signing_key, pipeline.renderer.reference())
    for issue_id, message_id in rows:
        issue = issues[issue_id]
        fast = pipeline.render_message(issue, message_id, NOW)
        naive = reference.compose(issue, message_id, NOW)
        assert fast.data == naive.data, issue.subscriber.email
        bodies.setdefault(issue.paper_ids, []).append(issue.subscriber.email)
    assert max(len(readers) for readers in bodies.values()) >= 5  # shared bodies were exercised
    # What was sent is exactly that.
    sent = {m.recipient: m.data for m in pipeline.mailer.outbox}  # type: ignore[attr-defined]
    first = issues[rows[0][0]]
    assert sent[first.subscriber.email] == pipeline.render_message(first, rows[0][1], NOW).data


def test_a_render_process_sends_the_same_messages(tmp_path: Path, stores: list[Store],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from digest.render_process import RenderProcess

    rendered: list[int] = []
    submit = RenderProcess.submit

    def counting(self: RenderProcess, now: datetime, deliveries: list[Any]) -> None:
        rendered.append(len(deliveries))
        submit(self, now, deliveries)

    monkeypatch.setattr(RenderProcess, "submit", counting)  # spied on, not replaced
    # Two databases would each make a signing key of their own: one key for both, so links compare.
    monkeypatch.setenv("DIGEST_SECRET_KEY", "fast-path-test-key-shared-by-both-databases")
    outboxes = {}
    for name, workers in (("in_process", 0), ("render_process", 1)):
        settings, store = workload(tmp_path, name, delivery={"workers": workers})
        stores.append(store)
        mailer = MemoryMailer() if workers == 0 else TwoAtOnce()  # one connection: no process (auto)
        summary = Pipeline(settings, store, mailer=mailer, clock=lambda: NOW).send(DAY)
        assert summary.failed == 0 and summary.sent + summary.skipped == READERS
        outboxes[name] = {m.recipient: canonical(m.data) for m in mailer.outbox}
        sent = summary.sent
    assert len(outboxes["in_process"]) > 100
    assert sum(rendered) == sent  # every message of the second run was rendered by the process
    assert outboxes["render_process"] == outboxes["in_process"]


class Watching(TwoAtOnce):
    """Checks, at each hand-over, what the database says: this message is "sending", and no more
    records are "sending" than messages can be in flight."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.most_sending = 0
        self.problems: list[str] = []
        self.in_flight = 0

    def send(self, message: OutgoingMessage) -> SendResult:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as con:
            sending = con.execute("SELECT count(*) FROM deliveries WHERE status = 'sending'").fetchone()[0]
            mine = con.execute("SELECT status FROM deliveries WHERE message_id = ?", (message.message_id,)).fetchone()
        with self.lock:
            self.most_sending = max(self.most_sending, sending)
            if mine != ("sending",):
                self.problems.append(f"{message.recipient}: {mine}")
        return super().send(message)


@pytest.mark.parametrize("workers", [0, 1])
def test_no_more_records_sending_than_messages_in_flight(tmp_path: Path, stores: list[Store], workers: int) -> None:
    settings, store = workload(tmp_path, f"w{workers}", delivery={"workers": workers})
    stores.append(store)
    mailer = Watching(Path(settings.database.url.split("///", 1)[1]))
    summary = Pipeline(settings, store, mailer=mailer, clock=lambda: NOW).send(DAY)
    assert summary.sent > 100 and summary.failed == 0
    assert mailer.problems == []
    assert 1 <= mailer.most_sending <= mailer.concurrency
    assert store.delivery_counts(DAY) == {"sent": summary.sent}


def test_a_re_run_sends_nothing_and_builds_nothing_new(tmp_path: Path, stores: list[Store]) -> None:
    settings, store = workload(tmp_path, "rerun")
    stores.append(store)
    first = Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: NOW).send(DAY)
    again = Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: NOW).send(DAY)
    assert first.sent > 100
    assert again.sent == 0 and again.skipped == READERS
