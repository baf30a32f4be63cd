"""The real send loop through the SMTP mailer into a real server: headers, outcome records, retries."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from smtp_sink import SmtpSink

from digest.errors import DeliveryError
from digest.models import DeliveryStatus, Paper, Subscriber, SubscriberStatus
from digest.pipeline import Pipeline
from digest.store import Store
from tests.conftest import NOW, make_settings

DAY = NOW.date()
READERS = ["ada@example.com", "grace@example.com", "alan@example.com"]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    pipeline: Pipeline
    store: Store
    sink: SmtpSink
    clock: Clock

    def delivery(self, email: str) -> Any:
        sub = self.store.get_subscriber(email)
        assert sub is not None and sub.id is not None
        issue_id = self.store.issue_id_for(sub.id, DAY)
        assert issue_id is not None
        return self.store.delivery_for_issue(issue_id)


def build_world(tmp_path: Path, sink: SmtpSink, papers: list[Paper], readers: list[Subscriber],
                **sections: Any) -> World:
    smtp = {"host": sink.host, "port": sink.port, "local_hostname": "client.test", "timeout_seconds": 5,
            "slowdown_seconds": 0.1, "max_connections": 2, "retry_backoff_seconds": 60}
    smtp.update(sections.pop("smtp", {}))
    settings = make_settings(tmp_path, mailer={"backend": "smtp"}, smtp=smtp,
                             site={"base_url": "https://digest.example.org",
                                   "sender": "Paper Digest <digest@news.example.org>"}, **sections)
    store = Store(settings.database.url)
    store.upsert_papers(papers, now=NOW - timedelta(hours=2))
    for sub in readers:
        store.add_subscriber(sub)
    clock = Clock(NOW)
    pipeline = Pipeline(settings, store, clock=clock)
    pipeline.tag_pending()
    return World(pipeline, store, sink, clock)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def world(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]) -> Iterator[World]:
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email=e) for e in READERS])
    yield w
    w.store.close()


def test_every_reader_gets_one_message_with_the_spec_headers(world: World) -> None:
    summary = world.pipeline.send(DAY)
    assert (summary.sent, summary.failed) == (3, 0)
    received = world.sink.received()
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(READERS)
    for got in received:
        [rcpt] = got.rcpt_tos
        msg = got.message
        delivery = world.delivery(rcpt)
        assert delivery.status is DeliveryStatus.SENT
        assert msg["Message-ID"] == delivery.message_id
        assert msg["To"] == rcpt
        # The envelope sender is the delivery's own signed return path (VERP), under the sender's domain.
        assert got.mail_from == world.pipeline.return_path.address(delivery.id)
        assert got.mail_from.endswith("@news.example.org")
        assert parsedate_to_datetime(msg["Date"]) == NOW
        assert msg["List-Id"] == "<paper-digest.news.example.org>"
        unsubscribe = msg["List-Unsubscribe"]
        assert "<https://digest.example.org/" in unsubscribe and "<mailto:" in unsubscribe
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_a_title_with_line_breaks_cannot_add_a_header(tmp_path: Path, sink: SmtpSink) -> None:
    evil = Paper(id="2608.00001", title="Sparse quokkas\r\nBcc: victim@attacker.example\r\nX-Injected: yes",
                 abstract="Quokka attention.", authors=("Eve Injector",), published=NOW)
    reader = Subscriber(email="reader@example.com", authors=("Eve Injector",))
    w = build_world(tmp_path, sink, [evil], [reader])
    assert w.pipeline.send(DAY).sent == 1
    [got] = sink.received()
    assert got.rcpt_tos == ("reader@example.com",)
    head = got.data.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line and line[:1] not in b" \t"]
    assert b"bcc" not in names and b"x-injected" not in names
    assert "Sparse quokkas" in got.message["Subject"]
    assert len(names) == len(set(names))  # and no header appears twice


def test_permanent_refusal_fails_and_suppresses_only_that_reader(world: World) -> None:
    world.sink.add_fault("rcpt", "550 5.1.1 <grace@example.com>: no such user", recipient="grace@example.com")
    summary = world.pipeline.send(DAY)
    assert (summary.sent, summary.failed) == (2, 1)
    delivery = world.delivery("grace@example.com")
    assert delivery.status is DeliveryStatus.FAILED
    assert "550 5.1.1" in delivery.last_error
    grace = world.store.get_subscriber("grace@example.com")
    assert grace is not None and grace.status is SubscriberStatus.SUPPRESSED
    assert world.store.get_subscriber("ada@example.com").status is SubscriberStatus.CONFIRMED  # type: ignore[union-attr]
    # Why, when and what the server said, on the reader (as `digest subscribers list --json` shows it).
    info = world.store.bounce_info()["grace@example.com"]
    assert info["hard_bounces"] == 1 and info["last_bounce"]["status"] == "5.1.1"
    assert info["status_reason"].startswith("hard bounce (smtp): ") and info["status_changed_at"]
    assert "550 5.1.1 <grace@example.com>: no such user" in info["status_reason"]


def test_a_spam_filter_refusal_fails_the_message_but_keeps_the_reader(world: World) -> None:
    world.sink.add_fault("after_data", "550 5.7.1 Message rejected as spam", recipient="grace@example.com")
    summary = world.pipeline.send(DAY)
    assert (summary.sent, summary.failed) == (2, 1)
    delivery = world.delivery("grace@example.com")
    assert delivery.status is DeliveryStatus.FAILED and "550 5.7.1" in delivery.last_error
    grace = world.store.get_subscriber("grace@example.com")
    assert grace is not None and grace.status is SubscriberStatus.CONFIRMED


def test_an_unknown_user_after_the_data_is_a_hard_bounce(world: World) -> None:
    world.sink.add_fault("after_data", "550 5.1.1 User unknown", recipient="grace@example.com")
    assert world.pipeline.send(DAY).failed == 1
    grace = world.store.get_subscriber("grace@example.com")
    assert grace is not None and grace.status is SubscriberStatus.SUPPRESSED


def _readers(n: int) -> list[str]:
    return [f"reader{k:02d}@example.com" for k in range(n)]


def _status(w: World, email: str) -> SubscriberStatus:
    sub = w.store.get_subscriber(email)
    assert sub is not None
    return sub.status


def test_an_unknown_user_is_suppressed_at_once_but_a_bare_refusal_is_not(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    readers = _readers(12)
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email=e) for e in readers])
    sink.add_fault("rcpt", "550 5.1.1 user unknown", recipient=readers[3])
    sink.add_fault("rcpt", "550 no", recipient=readers[7])
    summary = w.pipeline.send(DAY)
    assert (summary.sent, summary.failed, summary.pending, summary.relay_refusing) == (10, 2, 0, "")
    assert _status(w, readers[3]) is SubscriberStatus.SUPPRESSED  # 5.1.1: the address itself
    assert _status(w, readers[7]) is SubscriberStatus.CONFIRMED  # no reason given: once proves nothing
    assert w.delivery(readers[7]).status is DeliveryStatus.FAILED
    assert {e for e, n in sink.counts().items() if n} == set(readers) - {readers[3], readers[7]}


def test_a_bare_refusal_suppresses_when_the_address_is_refused_again_in_a_later_run(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    readers = _readers(6)
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email=e) for e in readers])
    sink.add_fault("rcpt", "550 no", recipient=readers[2])
    first = w.pipeline.send(DAY)
    assert (first.sent, first.failed) == (5, 1)
    assert _status(w, readers[2]) is SubscriberStatus.CONFIRMED
    assert w.pipeline.send(DAY).failed == 0  # the same run's issue is not tried again: still subscribed
    assert _status(w, readers[2]) is SubscriberStatus.CONFIRMED

    later = DAY + timedelta(days=1)
    w.clock.now = NOW + timedelta(days=1)
    # The next day's listing: the same papers retitled, under new ids: every reader has an issue again.
    w.store.upsert_papers([replace(p, id=f"2609.{k:05d}", title=f"{p.title}, revisited", topics=(),
                                   published=w.clock.now - timedelta(hours=2))
                           for k, p in enumerate(seed_papers)], now=w.clock.now - timedelta(hours=2))
    w.pipeline.tag_pending()
    second = w.pipeline.send(later)
    assert second.failed == 1
    assert _status(w, readers[2]) is SubscriberStatus.SUPPRESSED
    reason = w.store.bounce_info()[readers[2]]["status_reason"]
    assert "550 no" in reason and "refused on an earlier issue too" in reason
    assert all(_status(w, e) is SubscriberStatus.CONFIRMED for e in readers if e != readers[2])


def test_refusals_among_the_first_fifty_are_recorded_once_the_relay_proves_healthy(
    tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]
) -> None:
    readers = _readers(70)
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email=e) for e in readers])
    unknown = {readers[k] for k in (1, 20, 45, 60)}
    for email in unknown:
        sink.add_fault("rcpt", f"550 5.1.1 <{email}>: user unknown", recipient=email)
    summary = w.pipeline.send(DAY)
    assert (summary.sent, summary.failed, summary.pending, summary.relay_refusing) == (66, 4, 0, "")
    for email in readers:
        expected = SubscriberStatus.SUPPRESSED if email in unknown else SubscriberStatus.CONFIRMED
        assert _status(w, email) is expected, email
        status = DeliveryStatus.FAILED if email in unknown else DeliveryStatus.SENT
        assert w.delivery(email).status is status, email
    assert "550 5.1.1" in w.delivery(readers[1]).last_error and "held" not in w.delivery(readers[1]).last_error


@pytest.mark.parametrize(("later", "lateness", "sent"), [
    (timedelta(hours=6), 20, 1),  # 14:00 UTC: due 6 hours ago, the reader's day goes on: the retry goes
    (timedelta(hours=6), 5, 0),  # more than max_lateness_hours after the reader's send moment
    (timedelta(hours=16, minutes=30), 20, 0),  # 00:30 the next day: the reader's day is over
])
def test_extra_senders_keep_the_daemons_lateness_rules(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper],
                                                       later: timedelta, lateness: float, sent: int) -> None:
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email=e) for e in READERS],
                    schedule={"max_lateness_hours": lateness})
    w.sink.add_fault("rcpt", "451 4.3.0 try again later", recipient="alan@example.com", times=1)
    w.clock.now = datetime.combine(DAY, w.store.get_subscriber("alan@example.com").send_at,  # type: ignore[union-attr]
                                   tzinfo=UTC)  # 08:00, the readers' send moment
    assert w.pipeline.send(DAY).deferred == 1
    w.clock.now += later
    summary = w.pipeline.deliver_pending()
    assert summary.sent == sent
    assert len(w.sink.for_recipient("alan@example.com")) == sent
    if not sent:
        assert w.delivery("alan@example.com").status is DeliveryStatus.PENDING  # left alone, not failed
        # An operator's own `digest send` for that date still delivers it.
        assert w.pipeline.send(DAY).sent == 1
        assert len(w.sink.for_recipient("alan@example.com")) == 1


def test_transient_refusal_is_retried_after_backoff_with_the_same_message_id(world: World) -> None:
    world.sink.add_fault("rcpt", "451 4.3.0 try again later", recipient="alan@example.com", times=1)
    first = world.pipeline.send(DAY)
    assert (first.sent, first.deferred, first.failed) == (2, 1, 0)
    pending = world.delivery("alan@example.com")
    assert pending.status is DeliveryStatus.PENDING
    assert pending.next_attempt_at.replace(tzinfo=UTC) == NOW + timedelta(seconds=60)
    assert "451" in pending.last_error

    assert world.pipeline.send(DAY).sent == 0  # not due yet
    world.clock.now = NOW + timedelta(seconds=61)
    again = world.pipeline.send(DAY)
    assert (again.sent, again.skipped) == (1, 2)
    [got] = world.sink.for_recipient("alan@example.com")
    delivered = world.delivery("alan@example.com")
    assert delivered.status is DeliveryStatus.SENT and delivered.attempts == 2
    assert got.message["Message-ID"] == pending.message_id == delivered.message_id


def test_transient_attempts_are_bounded(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper]) -> None:
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email="full@example.com")],
                    smtp={"max_attempts": 2, "retry_backoff_seconds": 1})
    sink.add_fault("rcpt", "452 4.2.2 mailbox full")
    assert w.pipeline.send(DAY).deferred == 1
    w.clock.now = NOW + timedelta(seconds=5)
    summary = w.pipeline.send(DAY)
    assert summary.failed == 1
    delivery = w.delivery("full@example.com")
    assert delivery.status is DeliveryStatus.FAILED and "gave up after 2 attempts" in delivery.last_error
    assert w.store.get_subscriber("full@example.com").status is SubscriberStatus.CONFIRMED  # type: ignore[union-attr]


def test_lost_after_data_is_unknown_and_not_resent_unless_asked(world: World) -> None:
    world.sink.add_fault("after_data", disconnect=True, recipient="ada@example.com", times=1)
    summary = world.pipeline.send(DAY)
    assert (summary.sent, summary.unknown) == (2, 1)
    assert world.delivery("ada@example.com").status is DeliveryStatus.UNKNOWN
    assert len(world.sink.dropped) == 1  # the server did get it

    world.clock.now = NOW + timedelta(hours=1)
    assert world.pipeline.send(DAY).sent == 0
    assert world.sink.for_recipient("ada@example.com") == []

    assert world.store.requeue_unknown(DAY) == 1  # what `digest send --retry-unknown` does
    assert world.pipeline.send(DAY).sent == 1
    [got] = world.sink.for_recipient("ada@example.com")
    delivery = world.delivery("ada@example.com")
    assert delivery.status is DeliveryStatus.SENT and delivery.in_doubt
    assert got.message["Message-ID"] == world.sink.dropped[0].message["Message-ID"] == delivery.message_id


def test_two_databases_on_one_key_never_share_a_message_id(tmp_path: Path, sink: SmtpSink, seed_papers: list[Paper],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue numbers restart in every database: two installations (or a database made afresh) on the
    same key send issue 1 to the same reader, and a receiver must not take the second for a
    duplicate of the first. A re-send of one record still carries that record's id."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", "one-key-for-both-installations")
    worlds = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        worlds.append(build_world(tmp_path / name, sink, seed_papers, [Subscriber(email="ada@example.com")]))
    sink.add_fault("after_data", disconnect=True, recipient="ada@example.com", times=1)
    try:
        for w in worlds:
            w.pipeline.send(DAY)
        records = [w.delivery("ada@example.com") for w in worlds]
        assert [r.issue_id for r in records] == [1, 1]
        assert records[0].status is DeliveryStatus.UNKNOWN and records[1].status is DeliveryStatus.SENT
        assert records[0].message_id != records[1].message_id
        lost = sink.dropped[0].message["Message-ID"]
        [second] = sink.for_recipient("ada@example.com")
        assert (lost, second.message["Message-ID"]) == (records[0].message_id, records[1].message_id)

        # The first installation sends its lost message again: the same record, the same id.
        assert worlds[0].store.requeue_unknown(DAY) == 1
        assert worlds[0].pipeline.send(DAY).sent == 1
        resent = sink.for_recipient("ada@example.com")[-1]
        assert resent.message["Message-ID"] == lost == worlds[0].delivery("ada@example.com").message_id
    finally:
        for w in worlds:
            w.store.close()


def test_a_short_slow_down_does_not_fail_anything(world: World) -> None:
    fault = world.sink.add_fault("rcpt", "421 4.7.0 slow down", times=1)
    summary = world.pipeline.send(DAY)
    assert (summary.sent, summary.deferred, summary.failed) == (3, 0, 0)
    assert fault.fired == 1


def test_dry_run_sends_and_records_nothing(world: World) -> None:
    summary = world.pipeline.send(DAY, dry_run=True)
    assert sorted(email for email, _ in summary.planned) == sorted(READERS)
    assert all(count > 0 for _, count in summary.planned)
    assert world.sink.received() == []
    assert world.store.delivery_counts() == {}


def test_unreachable_server_fails_the_run_before_any_attempt(tmp_path: Path, seed_papers: list[Paper]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    class Closed:
        host, port = "127.0.0.1", closed_port

    w = build_world(tmp_path, Closed(), seed_papers, [Subscriber(email=e) for e in READERS])  # type: ignore[arg-type]
    with pytest.raises(DeliveryError, match="cannot start a session"):
        w.pipeline.send(DAY)
    for email in READERS:
        delivery = w.delivery(email)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)
    # Claims were given back: another sender can take every record at once, no lease to wait out.
    assert len(w.store.claim_deliveries("other", NOW, 60, 10, issue_date=DAY)) == 3


def test_dkim_signature_covers_unsubscribe_headers_end_to_end(tmp_path: Path, sink: SmtpSink,
                                                              seed_papers: list[Paper]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    w = build_world(tmp_path, sink, seed_papers, [Subscriber(email=e) for e in READERS],
                    smtp={"dkim_key_file": str(key_file), "dkim_selector": "mail2026"})
    assert w.pipeline.send(DAY).sent == 3

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"mail2026._domainkey.news.example.org." else None

    for got in sink.received():
        assert dkim.verify(got.data, dnsfunc=dns), got.rcpt_tos
        signature = " ".join(got.message["DKIM-Signature"].split()).replace(" ", "")
        signed = signature.split("h=")[1].split(";")[0].split(":")
        assert {"from", "list-unsubscribe", "list-unsubscribe-post", "message-id", "date"} <= set(signed)
