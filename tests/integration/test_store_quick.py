"""The quick reader (digest.store.quick, stdlib sqlite3) gives exactly what its reference, the Store,
gives; and it answers only for an up-to-date SQLite file, never creating or migrating one."""

from __future__ import annotations

from datetime import date, time, timedelta
from pathlib import Path

import pytest

from digest.models import (
    DeliveryStatus,
    Frequency,
    Issue,
    IssueEntry,
    IssueSection,
    Paper,
    Subscriber,
    SubscriberStatus,
)
from digest.store import Store, quick
from digest.store.bounces import BounceEvent, BouncePolicy
from digest.store.quick import QuickReader
from tests.conftest import NOW

HOSTILE = 'Zoë "O\'Brien"\n\t\\u0000 {"x": [1]} 🐍 \u202e'


def _varied(store: Store) -> None:
    """Readers with every kind of field the listing shows, and a bounce, a complaint and status reasons."""
    store.add_subscriber(Subscriber(email="plain@example.org"), NOW)
    store.add_subscriber(Subscriber(
        email="all@example.org", name=HOSTILE, topics=("diffusion", "pruning"), keywords=("sparse*", HOSTILE),
        exclude=("survey",), authors=("Ada Lovelace", "Émile Borel"), frequency=Frequency.WEEKLY,
        send_at=time(6, 45), tz="Pacific/Chatham", max_papers=3, send_empty=True, weekday=4, paused=True), NOW)
    for k in range(5):
        store.add_subscriber(Subscriber(email=f"r{k}@example.org", status=SubscriberStatus.PENDING), NOW)
    store.set_subscriber_status("r1@example.org", SubscriberStatus.UNSUBSCRIBED, NOW, reason=f"asked: {HOSTILE}")
    reader = store.add_subscriber(Subscriber(email="bounced@example.org"), NOW)
    store.upsert_papers([Paper(id="2408.00001", title="T", abstract="A")], NOW)
    issue = Issue(reader, date(2026, 8, 19), (IssueSection("nas", "NAS", (
        IssueEntry(store.list_papers(ids=["2408.00001"])[0], "because", 1.0),)),))
    delivery = store.create_issue(issue, "subject", lambda n: f"<m{n}@x>", NOW)
    [claim] = store.claim_deliveries("w", NOW, 60, 10, issue_date=issue.date)
    store.mark_outcome(claim.id, DeliveryStatus.SENT, NOW)
    target = store.bounce_target(claim.id)
    assert target is not None and delivery
    policy = BouncePolicy(hard_to_suppress=2, soft_to_suppress=3, soft_period=timedelta(days=7))
    store.record_bounce(BounceEvent("k1", target, "soft", "stdin", "4.2.2", f"mailbox full {HOSTILE}"),
                        policy, NOW + timedelta(minutes=5))
    store.record_bounce(BounceEvent("k2", target, "complaint", "imap"), policy, NOW + timedelta(minutes=9))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'var' / 'd.sqlite3'}")


def test_the_quick_reader_reads_what_the_store_reads(sqlite_store: Store, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _varied(sqlite_store)
    monkeypatch.setattr(quick, "_BATCH", 3)  # several batches, one partly full
    reader = QuickReader.open(tmp_path / "var" / "d.sqlite3")
    assert reader is not None
    subscribers = list(reader.iter_subscribers())
    assert subscribers == list(sqlite_store.iter_subscribers())
    assert len(subscribers) == 8 and subscribers[1].name == HOSTILE and subscribers[1].paused
    assert all(s.created_at is not None and s.created_at.tzinfo is not None for s in subscribers)
    health = reader.bounce_info()
    assert health == sqlite_store.bounce_info()
    assert health["bounced@example.org"]["last_bounce"]["kind"] == "complaint"
    reader.close()


def test_only_an_up_to_date_sqlite_file_is_read_quickly(sqlite_store: Store, tmp_path: Path) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    missing = tmp_path / "nothing.sqlite3"
    assert QuickReader.open(missing) is None and not missing.exists()  # never creates a database
    (tmp_path / "empty.sqlite3").write_bytes(b"")
    assert QuickReader.open(tmp_path / "empty.sqlite3") is None  # no schema revision: the Store's
    sqlite_store.add_subscriber(Subscriber(email="old@example.org"), NOW)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
    with sqlite_store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    database = tmp_path / "var" / "d.sqlite3"
    assert QuickReader.open(database) is None  # to be migrated: the Store does that
    sqlite_store.migrate()
    reader = QuickReader.open(database)
    assert reader is not None
    assert list(reader.iter_subscribers()) == list(sqlite_store.iter_subscribers())
    assert [s.email for s in reader.iter_subscribers()] == ["old@example.org"]
