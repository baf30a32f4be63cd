"""Bounces, complaints and auto-replies against real deliveries in a real SQLite store, in process and
through the real `digest bounces ingest` command (its exit codes are what Postfix's pipe reads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.bounces import BounceProcessor, return_path_for
from digest.config import Settings
from digest.mail import MemoryMailer
from digest.models import SubscriberStatus
from digest.pipeline import Pipeline
from digest.signing_key import signing_key
from digest.store import IssueHealth, Store
from tests.conftest import make_settings
from tests.integration.bounce_helpers import bounce_for, delivery_of

DAY = date(2026, 8, 19)
READERS = [f"reader{i}@example.net" for i in range(6)]
SECRET = "bounce-test-secret-key-0123456789"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, Store, MemoryMailer]:
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    settings = make_settings(tmp_path, bounces={"domain": "bounces.example.org", "soft_bounces_to_suppress": 2},
                             site={"sender": "Paper Digest <digest@example.org>"})
    store = Store(settings.database.url)
    from digest.subscribers import new_subscriber

    for address in READERS:
        store.add_subscriber(new_subscriber(settings, address))
    mailer = MemoryMailer()
    pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: datetime(2026, 8, 19, 9, 0, tzinfo=UTC))
    pipeline.fetch(["seed"])
    assert pipeline.send(DAY).sent == len(READERS)
    return settings, store, mailer


def _status(store: Store) -> dict[str, str]:
    return {s.email: s.status.value for s in store.iter_subscribers()}


def test_hard_bounce_suppresses_exactly_that_reader(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    raw = bounce_for(settings, store, "postfix_unknown_user.eml", READERS[1], DAY)
    result = processor.ingest(raw, "stdin")
    assert [(a.email, a.kind, a.action, a.status) for a in result.actions] == [
        (READERS[1], "hard", "suppressed", "5.1.1")]
    assert _status(store) == {r: "suppressed" if r == READERS[1] else "confirmed" for r in READERS}
    assert processor.ingest(raw, "stdin").actions[0].action == "duplicate"  # the same DSN again
    info = store.bounce_info()[READERS[1]]
    assert info["hard_bounces"] == 1 and info["last_bounce"]["status"] == "5.1.1"
    assert "5.1.1" in info["status_reason"] and "User unknown" in info["last_bounce"]["diagnostic"]
    assert store.is_suppressed(READERS[1]) and not store.is_suppressed(READERS[0])
    delivery_id, _ = delivery_of(store, READERS[1], DAY)
    events = store.bounce_events()
    assert [(e["delivery_id"], e["kind"], e["action"]) for e in events] == [(delivery_id, "hard", "suppressed")]


@pytest.mark.parametrize("name", ["exim_unknown_user.eml", "gmail_no_such_user.eml",
                                  "outlook_recipient_not_found.eml"])
def test_other_mta_hard_bounces(world: tuple[Settings, Store, MemoryMailer], name: str) -> None:
    settings, store, _ = world
    result = BounceProcessor(settings, store).ingest(bounce_for(settings, store, name, READERS[2], DAY), "imap")
    assert [(a.email, a.action) for a in result.actions] == [(READERS[2], "suppressed")]
    assert _status(store)[READERS[2]] == "suppressed"


def test_soft_bounces_suppress_after_the_configured_number(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    clock = [datetime(2026, 8, 19, 10, 0, tzinfo=UTC)]
    processor = BounceProcessor(settings, store, clock=lambda: clock[0])
    first = processor.ingest(bounce_for(settings, store, "postfix_mailbox_full.eml", READERS[3], DAY), "stdin")
    assert first.actions[0].action == "counted" and _status(store)[READERS[3]] == "confirmed"
    # A second soft bounce for the same delivery (another copy of the report) is not a second count.
    again = bounce_for(settings, store, "postfix_mailbox_full.eml", READERS[3], DAY).replace(b"B3@", b"B4@")
    assert processor.ingest(again, "stdin").actions[0].action == "recorded"
    # The next issue bounces softly too, within the period: now suppressed (soft_bounces_to_suppress = 2).
    pipeline = Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: clock[0])
    pipeline.send(DAY + timedelta(days=1))
    clock[0] += timedelta(days=1)
    second = processor.ingest(bounce_for(settings, store, "postfix_mailbox_full.eml", READERS[3],
                                         DAY + timedelta(days=1)), "stdin")
    assert second.actions[0].action == "suppressed"
    assert _status(store)[READERS[3]] == "suppressed"
    assert "2 soft bounces within 30 days" in (store.bounce_info()[READERS[3]]["status_reason"] or "")


def test_soft_bounces_outside_the_period_do_not_add_up(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    clock = [datetime(2026, 8, 19, 10, 0, tzinfo=UTC)]
    processor = BounceProcessor(settings, store, clock=lambda: clock[0])
    processor.ingest(bounce_for(settings, store, "postfix_mailbox_full.eml", READERS[3], DAY), "stdin")
    Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: clock[0]).send(DAY + timedelta(days=1))
    clock[0] += timedelta(days=45)
    late = processor.ingest(bounce_for(settings, store, "postfix_mailbox_full.eml", READERS[3],
                                       DAY + timedelta(days=1)), "stdin")
    assert late.actions[0].action == "counted" and _status(store)[READERS[3]] == "confirmed"


def _bare(settings: Settings, store: Store, email: str, day: date) -> bytes:
    """A relay's DSN for ``email``'s issue of ``day``: Status 5.0.0 and no diagnostic at all."""
    return bounce_for(settings, store, "relay_bare_5_0_0.eml", email, day)


def _next_issue(settings: Settings, store: Store, day: date) -> None:
    sent = Pipeline(settings, store, mailer=MemoryMailer(),
                    clock=lambda: datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=9)).send(day)
    assert sent.sent > 0


def test_an_unexplained_refusal_counts_only_when_repeated_on_a_later_issue(
        world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    reader = READERS[1]
    sub = store.get_subscriber(reader)
    assert sub is not None and sub.id is not None
    raw = _bare(settings, store, reader, DAY)
    first = processor.ingest(raw, "stdin")
    assert [(a.email, a.kind, a.action, a.status) for a in first.actions] == [
        (reader, "unexplained", "recorded", "5.0.0")]
    assert first.line().endswith(f"{reader}=unexplained:recorded(5.0.0)")
    assert _status(store)[reader] == "confirmed" and not store.is_suppressed(reader)
    assert store.bounce_info()[reader]["hard_bounces"] == 0
    remembered = store.unexplained_refusal(sub.id)
    assert remembered is not None and remembered[0] == DAY and "5.0.0" in remembered[1]
    delivery_id, _ = delivery_of(store, reader, DAY)
    assert [(e["delivery_id"], e["kind"], e["action"], e["status"]) for e in store.bounce_events()] == [
        (delivery_id, "unexplained", "recorded", "5.0.0")]
    # The same DSN again acts once; another copy of a report for the same issue is no second sighting.
    assert processor.ingest(raw, "stdin").actions[0].action == "duplicate"
    copy = raw.replace(b"0G1V0070AJN2C7@", b"0G1V0070AJN2C8@")
    assert processor.ingest(copy, "imap").actions[0].action == "recorded"
    assert _status(store)[reader] == "confirmed" and len(store.bounce_events()) == 2

    # The next issue is refused alike: that is the second sighting, a hard bounce (hard_bounces_to_suppress = 1).
    later = DAY + timedelta(days=1)
    _next_issue(settings, store, later)
    second = processor.ingest(_bare(settings, store, reader, later), "stdin")
    assert [(a.kind, a.action) for a in second.actions] == [("unexplained", "suppressed")]
    assert _status(store) == {r: "suppressed" if r == reader else "confirmed" for r in READERS}
    assert store.is_suppressed(reader) and store.unexplained_refusal(sub.id) is None
    info = store.bounce_info()[reader]
    assert info["hard_bounces"] == 1 and info["last_bounce"]["kind"] == "unexplained"
    assert "refused on an earlier issue too" in (info["status_reason"] or "")
    assert processor.ingest(_bare(settings, store, reader, later), "stdin").actions[0].action == "duplicate"
    assert store.bounce_info()[reader]["hard_bounces"] == 1


def test_a_delivery_in_between_forgets_an_unexplained_refusal(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    reader = READERS[2]
    sub = store.get_subscriber(reader)
    assert sub is not None
    store.save_subscriber(replace(sub, send_empty=True))  # the seed's papers run out after two issues
    assert processor.ingest(_bare(settings, store, reader, DAY), "stdin").actions[0].action == "recorded"
    _next_issue(settings, store, DAY + timedelta(days=1))  # delivered: no bounce comes back for it
    _next_issue(settings, store, DAY + timedelta(days=2))
    third = processor.ingest(_bare(settings, store, reader, DAY + timedelta(days=2)), "stdin")
    assert third.actions[0].action == "recorded" and _status(store)[reader] == "confirmed"


def test_the_send_path_and_the_bounce_path_share_one_memory(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    reader = READERS[3]
    sub = store.get_subscriber(reader)
    assert sub is not None and sub.id is not None
    # The send path saw "550 relay not permitted" at RCPT for this reader on DAY (SendEngine.record_refusal) ...
    assert not store.record_unexplained_refusal(sub.id, DAY, "550 relay not permitted")
    # ... and the next issue, accepted by the relay, comes back as a bare 5.0.0: the second sighting.
    later = DAY + timedelta(days=1)
    _next_issue(settings, store, later)
    result = BounceProcessor(settings, store).ingest(_bare(settings, store, reader, later), "stdin")
    assert result.actions[0].action == "suppressed" and _status(store)[reader] == "suppressed"


def test_a_bad_address_still_suppresses_at_once_beside_unexplained_ones(
        world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    for reader in READERS[:3]:
        assert processor.ingest(_bare(settings, store, reader, DAY), "stdin").actions[0].action == "recorded"
    hard = processor.ingest(bounce_for(settings, store, "postfix_unknown_user.eml", READERS[4], DAY), "stdin")
    assert [(a.kind, a.action, a.status) for a in hard.actions] == [("hard", "suppressed", "5.1.1")]
    assert _status(store) == {r: "suppressed" if r == READERS[4] else "confirmed" for r in READERS}


def test_complaint_unsubscribes_exactly_that_reader(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    result = BounceProcessor(settings, store).ingest(
        bounce_for(settings, store, "arf_abuse.eml", READERS[4], DAY), "imap")
    assert [(a.email, a.kind, a.action) for a in result.actions] == [(READERS[4], "complaint", "unsubscribed")]
    assert _status(store) == {r: "unsubscribed" if r == READERS[4] else "confirmed" for r in READERS}
    assert store.is_suppressed(READERS[4])
    assert store.bounce_info()[READERS[4]]["complaints"] == 1


def test_redacted_complaint_is_found_by_its_message_id(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    raw = bounce_for(settings, store, "arf_redacted.eml", READERS[5], DAY)
    result = BounceProcessor(settings, store).ingest(raw, "imap")
    assert [(a.email, a.action) for a in result.actions] == [(READERS[5], "unsubscribed")]


def test_forged_and_foreign_reports_change_nothing(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    delivery_id, message_id = delivery_of(store, READERS[0], DAY)
    return_path = return_path_for(settings, signing_key(settings, store))
    good = return_path.address(delivery_id)
    before = _status(store)
    cases = {
        # a token signed with another key
        "forged": good.replace(good.split("-")[1][:4], "aaaa"),
        # our bounce address without a token
        "unsigned": "bounces@bounces.example.org",
        # a signed address of another delivery than the one the DSN names
        "other": return_path.address(delivery_of(store, READERS[1], DAY)[0]),
    }
    from tests.integration.bounce_helpers import shape

    for why, address in cases.items():
        raw = shape("postfix_unknown_user.eml", return_path=address, recipient=READERS[0], message_id=message_id)
        result = processor.ingest(raw, "stdin")
        assert result.actions == (), why
        assert result.ignored, why
    # A DSN for an address that never got that message (the token is good, the address is not its reader's).
    raw = shape("postfix_unknown_user.eml", return_path=good, recipient="stranger@example.net", message_id=message_id)
    assert "another address" in processor.ingest(raw, "stdin").ignored
    # A complaint about a message that is not ours.
    raw = shape("arf_redacted.eml", return_path="", recipient=READERS[0], message_id="<not.ours@example.org>")
    assert processor.ingest(raw, "imap").actions == ()
    assert _status(store) == before and store.bounce_events() == []


@pytest.mark.parametrize("name", ["autoreply_out_of_office.eml", "autoreply_vacation.eml", "delayed_warning.eml",
                                  "gmail_policy_block.eml"])
def test_auto_replies_warnings_and_policy_blocks_leave_readers_alone(
        world: tuple[Settings, Store, MemoryMailer], name: str) -> None:
    settings, store, _ = world
    before = _status(store)
    result = BounceProcessor(settings, store).ingest(bounce_for(settings, store, name, READERS[0], DAY), "stdin")
    assert all(a.action == "recorded" for a in result.actions)
    assert _status(store) == before


def test_second_send_skips_the_suppressed(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    processor.ingest(bounce_for(settings, store, "postfix_unknown_user.eml", READERS[1], DAY), "stdin")
    processor.ingest(bounce_for(settings, store, "arf_abuse.eml", READERS[2], DAY), "stdin")
    mailer = MemoryMailer()
    later = Pipeline(settings, store, mailer=mailer, clock=lambda: datetime(2026, 8, 20, 9, 0, tzinfo=UTC))
    assert later.send(DAY + timedelta(days=1)).sent == len(READERS) - 2
    assert sorted(m.recipient for m in mailer.outbox) == sorted(set(READERS) - {READERS[1], READERS[2]})


def test_health_per_issue(world: tuple[Settings, Store, MemoryMailer]) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    processor.ingest(bounce_for(settings, store, "postfix_unknown_user.eml", READERS[1], DAY), "stdin")
    processor.ingest(bounce_for(settings, store, "postfix_mailbox_full.eml", READERS[2], DAY), "stdin")
    processor.ingest(bounce_for(settings, store, "arf_abuse.eml", READERS[3], DAY), "stdin")
    store.set_subscriber_status(READERS[4], SubscriberStatus.UNSUBSCRIBED, reason="web unsubscribe")
    [row] = store.list_health(DAY - timedelta(days=7))
    assert row == IssueHealth(issue_date=DAY, sent=6, delivered=4, hard=1, soft=1, complaints=1, unsubscribes=2)


# ---- the command, as Postfix runs it ----------------------------------------------------------------


def _cli(tmp_path: Path, settings: Settings, *args: str, stdin: bytes = b"",
         db_url: str | None = None) -> subprocess.CompletedProcess[bytes]:
    config = tmp_path / "bounces.toml"
    config.write_text(f'[database]\nurl = "{db_url or settings.database.url}"\n'
                      f'[site]\nsender = "{settings.site.sender}"\n'
                      f'[bounces]\ndomain = "{settings.bounces.domain}"\n'
                      f'[demo]\nsubscribers_csv = ""\n')
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DIGEST_SECRET_KEY": SECRET}
    return subprocess.run([sys.executable, "-m", "digest", "--config", str(config), *args], input=stdin,
                          capture_output=True, timeout=120, env=env, cwd=tmp_path)


def test_cli_ingest_exit_codes(world: tuple[Settings, Store, MemoryMailer], tmp_path: Path) -> None:
    settings, store, _ = world
    raw = bounce_for(settings, store, "postfix_unknown_user.eml", READERS[0], DAY)
    proc = _cli(tmp_path, settings, "bounces", "ingest", "--json", stdin=raw)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["actions"][0]["email"] == READERS[0] and out["actions"][0]["action"] == "suppressed"
    assert _status(store)[READERS[0]] == "suppressed"

    auto = bounce_for(settings, store, "autoreply_out_of_office.eml", READERS[1], DAY)
    proc = _cli(tmp_path, settings, "bounces", "ingest", stdin=auto)
    assert proc.returncode == 0 and b"reason=auto-reply" in proc.stdout

    proc = _cli(tmp_path, settings, "bounces", "ingest", stdin=b"")
    assert proc.returncode == 2 and proc.stderr.strip().count(b"\n") == 0

    # The database is unreachable: exit 75 (Postfix keeps the message and retries), one line, no traceback.
    proc = _cli(tmp_path, settings, "bounces", "ingest", stdin=raw,
                db_url="postgresql://nobody@127.0.0.1:1/none")
    assert proc.returncode == 75, proc.stderr
    assert b"Traceback" not in proc.stderr and b"try again later" in proc.stderr

    listed = [json.loads(line)
              for line in _cli(tmp_path, settings, "subscribers", "list", "--json").stdout.splitlines()]
    mine = next(s for s in listed if s["email"] == READERS[0])
    assert mine["status"] == "suppressed" and mine["hard_bounces"] == 1
    assert mine["last_bounce"]["status"] == "5.1.1" and mine["status_reason"].startswith("hard bounce (stdin)")



def test_cli_shows_an_unexplained_refusal(world: tuple[Settings, Store, MemoryMailer], tmp_path: Path) -> None:
    settings, store, _ = world
    raw = _bare(settings, store, READERS[5], DAY)
    proc = _cli(tmp_path, settings, "bounces", "ingest", stdin=raw)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == f"kind=bounce format=dsn {READERS[5]}=unexplained:recorded(5.0.0)"
    proc = _cli(tmp_path, settings, "bounces", "ingest", stdin=raw)
    assert proc.returncode == 0 and f"{READERS[5]}=unexplained:duplicate(5.0.0)".encode() in proc.stdout
    listed = _cli(tmp_path, settings, "bounces", "list").stdout.decode().splitlines()
    assert len(listed) == 1 and f"{READERS[5]}\tunexplained\trecorded\t5.0.0" in listed[0]
    assert _status(store)[READERS[5]] == "confirmed"


def test_status_reports_health_and_warns(world: tuple[Settings, Store, MemoryMailer], tmp_path: Path) -> None:
    settings, store, _ = world
    processor = BounceProcessor(settings, store)
    processor.ingest(bounce_for(settings, store, "postfix_unknown_user.eml", READERS[1], DAY), "stdin")
    processor.ingest(bounce_for(settings, store, "arf_abuse.eml", READERS[2], DAY), "stdin")
    from digest.status import HealthTotals, format_status, list_health

    health = list_health(store, DAY + timedelta(days=1))
    assert health.totals == HealthTotals(sent=6, delivered=5, hard=1, soft=0, complaints=1, unsubscribes=1)
    assert len(health.warnings) == 2  # 1 in 6 is far past both 0.1% and 2%
    proc = _cli(tmp_path, settings, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "list_health" in report
    from digest.status import collect_status

    collected = collect_status(Pipeline(settings, store, clock=lambda: datetime(2026, 8, 20, 9, 0, tzinfo=UTC)))
    assert collected.list_health.totals == health.totals
    text = format_status(collected)
    assert "delivered=5 bounced hard=1 soft=0 complaints=1 unsubscribes=1" in text
    assert "WARNING: complaint rate 16.67% is above 0.1%" in text
    assert "WARNING: hard bounce rate 16.67% is above 2%" in text


def test_strange_fields_on_postgresql(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL checks column widths (SQLite does not): a DSN with long, odd fields is still recorded."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    settings = make_settings(tmp_path, database={"url": postgres_url}, bounces={"domain": "bounces.example.org"})
    store = Store(postgres_url)
    from digest.subscribers import new_subscriber

    store.add_subscriber(new_subscriber(settings, READERS[0]))
    pipeline = Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: datetime(2026, 8, 19, 9, 0, tzinfo=UTC))
    pipeline.fetch(["seed"])
    assert pipeline.send(DAY).sent == 1
    raw = bounce_for(settings, store, "postfix_unknown_user.eml", READERS[0], DAY)
    raw = raw.replace(b"Status: 5.1.1", b"Status: failed permanently, see the diagnostic \x1b[31mbelow")
    raw = raw.replace(b"Diagnostic-Code: smtp; 550 5.1.1", b"Diagnostic-Code: smtp; 550 5.1.1 " + b"x" * 5000)
    result = BounceProcessor(settings, store).ingest(raw, "stdin")
    assert [(a.action, a.status) for a in result.actions] == [("suppressed", "5.1.1")]
    [event] = store.bounce_events()
    assert "\x1b" not in event["diagnostic"] and len(event["diagnostic"]) <= 2000
    store.close()
