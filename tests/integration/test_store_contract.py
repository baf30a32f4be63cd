"""The store contract, run on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from digest.errors import UsageError
from digest.models import (
    AttemptEnd,
    DeliveryStatus,
    Issue,
    IssueEntry,
    IssueSection,
    Paper,
    Subscriber,
    SubscriberStatus,
    TopicAssignment,
)
from digest.sources.normalize import title_key
from digest.store import Store

NOW = datetime(2026, 8, 19, 12, 0, tzinfo=UTC)


def p(pid: str, **kw: object) -> Paper:
    base = {"title": f"Title {pid}", "abstract": f"Abstract of {pid}.", "sources": ("hf_daily",)}
    base.update(kw)
    return Paper(id=pid, **base)  # type: ignore[arg-type]


def _head() -> str:
    """The newest migration's revision (each helper's migration moves it; the test follows)."""
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_migrations_are_idempotent(any_store: Store) -> None:
    any_store.migrate()
    assert any_store.schema_version() == _head()


def test_records_from_before_the_deadlines_revision_stay_deliverable(any_store: Store) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    sub = any_store.add_subscriber(Subscriber(email="old@example.org"), NOW)
    _issue(any_store, sub, date(2026, 8, 19), ["m1"])
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
    with any_store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")  # the record as revision 0001 wrote it: no deadlines
    any_store.migrate()
    assert any_store.schema_version() == _head()
    late = NOW + timedelta(days=3)
    [claim] = any_store.claim_deliveries("w", late, 60, 10, due_since=late - timedelta(hours=1))
    assert claim.subscriber_id == sub.id


def test_insert_then_same_again_is_not_new(any_store: Store) -> None:
    assert any_store.upsert_papers([p("2408.00001"), p("2408.00002")], NOW) == (2, 0)
    assert any_store.upsert_papers([p("2408.00001"), p("2408.00002")], NOW) == (0, 0)
    assert any_store.count_papers() == 2


def test_fields_merge_across_sources(any_store: Store) -> None:
    any_store.upsert_papers([p("2408.00001", upvotes=3, ai_keywords=("pruning",), code_url="https://g/x")], NOW)
    any_store.upsert_papers([p("2408.00001", sources=("arxiv",), categories=("cs.LG",), version=1,
                               pdf_url="https://arxiv.org/pdf/2408.00001v1")], NOW)
    [merged] = any_store.list_papers()
    assert merged.sources == ("hf_daily", "arxiv")
    assert merged.categories == ("cs.LG",) and merged.upvotes == 3
    assert merged.code_url == "https://g/x" and merged.pdf_url and merged.version == 1


def test_a_paper_keeps_the_earliest_listing_day_it_was_given(any_store: Store) -> None:
    any_store.upsert_papers([p("2408.00001", listed_on=date(2026, 8, 19)), p("2408.00002")], NOW)
    got = {x.id: x.listed_on for x in any_store.list_papers()}
    assert got == {"2408.00001": date(2026, 8, 19), "2408.00002": NOW.date()}  # no day known: the fetch's
    assert any_store.upsert_papers([p("2408.00001", listed_on=date(2026, 8, 18))], NOW) == (0, 1)
    assert any_store.upsert_papers([p("2408.00001", listed_on=date(2026, 8, 20)), p("2408.00001")], NOW) == (0, 0)
    [paper] = any_store.list_papers(ids=["2408.00001"])
    assert paper.listed_on == date(2026, 8, 18)
    assert [x.id for x in any_store.list_papers(listed_since=date(2026, 8, 19))] == ["2408.00002"]


def test_papers_stored_before_listing_days_are_dated_by_their_first_fetch(any_store: Store) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    late = datetime(2026, 8, 17, 23, 30, tzinfo=UTC)  # late in the UTC day: still the 17th
    any_store.upsert_papers([p("2408.00001", listed_on=date(2026, 8, 1))], late)
    any_store.upsert_papers([p("2408.00002")], NOW)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
    with any_store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")  # the rows as revision 0008 kept them: no listing day
    any_store.migrate()
    assert any_store.schema_version() == _head()
    assert {x.id: x.listed_on for x in any_store.list_papers()} == {
        "2408.00001": date(2026, 8, 17), "2408.00002": NOW.date()}


def test_new_version_updates_text_and_needs_tagging_again(any_store: Store) -> None:
    any_store.upsert_papers([p("2408.00001", version=1)], NOW)
    any_store.save_tags([p("2408.00001", topics=(TopicAssignment("nas", 2.0, ("nas",)),))], NOW)
    assert any_store.papers_needing_tags() == []
    new, updated = any_store.upsert_papers([p("2408.00001", version=2, abstract="Rewritten.")], NOW)
    assert (new, updated) == (0, 1)
    [paper] = any_store.papers_needing_tags()
    assert paper.abstract == "Rewritten." and paper.version == 2
    any_store.upsert_papers([p("2408.00001", version=1, abstract="Old text.")], NOW)
    assert any_store.list_papers()[0].abstract == "Rewritten."


def test_title_only_paper_takes_the_arxiv_id_later(any_store: Store) -> None:
    title = "Sharper Bounds for $\\ell_p$ Sensitivity Sampling"
    seed = Paper(id=title_key(title), title=title, abstract="Seed abstract here.", sources=("seed",))
    any_store.upsert_papers([seed], NOW)
    new, _ = any_store.upsert_papers([p("2306.00001", title=title, abstract="Seed abstract here.")], NOW)
    assert new == 0
    [paper] = any_store.list_papers()
    assert paper.id == "2306.00001" and set(paper.sources) == {"seed", "hf_daily"}


def test_topics_round_trip_and_filter(any_store: Store) -> None:
    any_store.upsert_papers([p("a1"), p("a2")], NOW)
    any_store.save_tags([p("a1", topics=(TopicAssignment("pruning", 3.5, ("structured pruning",)),)),
                         p("a2")], NOW)
    [tagged] = any_store.list_papers(topic="pruning")
    assert tagged.id == "a1" and tagged.topics[0].why == ("structured pruning",)
    assert any_store.list_papers(since=NOW + timedelta(seconds=1)) == []


def test_source_state_kept_only_on_success(any_store: Store) -> None:
    any_store.record_fetch("hf_daily", ok=True, new=3, state={"etag": '"v1"'}, now=NOW)
    any_store.record_fetch("hf_daily", ok=False, error="HTTP 500", state={"etag": "bad"}, now=NOW)
    assert any_store.source_state("hf_daily") == {"etag": '"v1"'}
    [rec] = any_store.source_records()
    assert rec.last_result == "error" and rec.last_error == "HTTP 500" and rec.last_ok_at == NOW


def test_subscriber_crud(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="Ada@Example.org", topics=("nas",)), NOW)
    assert sub.id is not None
    with pytest.raises(UsageError, match="already exists"):
        any_store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    any_store.save_subscriber(replace(sub, email="ada@example.org", topics=("pruning", "nas"), max_papers=5))
    got = any_store.get_subscriber("ada@example.org")
    assert got is not None and got.topics == ("pruning", "nas") and got.max_papers == 5
    assert any_store.set_subscriber_status("ada@example.org", SubscriberStatus.UNSUBSCRIBED)
    assert any_store.list_subscribers(SubscriberStatus.CONFIRMED) == []
    assert any_store.remove_subscriber("ada@example.org")
    assert any_store.get_subscriber("ada@example.org") is None


def test_iter_subscribers_in_batches(any_store: Store) -> None:
    for i in range(7):
        any_store.add_subscriber(Subscriber(email=f"s{i}@example.org"), NOW)
    assert [s.email for s in any_store.iter_subscribers(batch_size=3)] == [f"s{i}@example.org" for i in range(7)]


def _issue(store: Store, sub: Subscriber, day: date, ids: list[str]) -> int:
    store.upsert_papers([p(i) for i in ids], NOW)
    papers = store.list_papers(ids=ids)
    entries = tuple(IssueEntry(x, "because", 1.0) for x in sorted(papers, key=lambda x: ids.index(x.id)))
    issue = Issue(sub, day, (IssueSection("nas", "NAS", entries),))
    return store.create_issue(issue, "subject", lambda n: f"<m{n}@x>", NOW)


def test_issue_and_delivery_lifecycle(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="r@example.org"), NOW)
    day = date(2026, 8, 19)
    issue_id = _issue(any_store, sub, day, ["b1", "b2"])
    assert _issue(any_store, sub, day, ["b1", "b2"]) == issue_id  # idempotent per (subscriber, date)
    loaded = any_store.load_issue(issue_id, {"nas": "NAS"})
    assert loaded is not None and loaded.paper_ids == ("b1", "b2")

    [claim] = any_store.claim_deliveries("w1", NOW, 60, 10, issue_date=day)
    assert claim.message_id == f"<m{issue_id}@x>" and claim.status is DeliveryStatus.PENDING
    assert any_store.claim_deliveries("w2", NOW, 60, 10, issue_date=day) == []  # leased to w1
    assert any_store.mark_sending(claim.id, "w1", NOW, 60)
    any_store.mark_outcome(claim.id, DeliveryStatus.SENT, NOW)
    assert any_store.received_paper_ids(sub.id) == {"b1", "b2"}  # type: ignore[arg-type]
    assert any_store.delivery_counts(day) == {"sent": 1}


def test_a_claim_by_the_daemon_rules_skips_records_too_late_or_past_the_readers_day(any_store: Store) -> None:
    day = date(2026, 8, 19)
    # Send moments, UTC: 06:00 (Paris 08:00), 08:00 (UTC) and 12:00 (Tokyo 21:00, whose day ends 15:00).
    paris = any_store.add_subscriber(Subscriber(email="p@example.org", tz="Europe/Paris"), NOW)
    london = any_store.add_subscriber(Subscriber(email="u@example.org"), NOW)
    tokyo = any_store.add_subscriber(Subscriber(email="t@example.org", tz="Asia/Tokyo", send_at=time(21, 0)), NOW)
    for sub in (paris, london, tokyo):
        _issue(any_store, sub, day, ["l1"])
    at = datetime(2026, 8, 19, 14, 30, tzinfo=UTC)

    def claimable(now: datetime, hours: float) -> set[str]:
        found = any_store.claim_deliveries("probe", now, 60, 10, issue_date=day, due_since=now - timedelta(hours=hours))
        any_store.release_claims("probe")
        return {{paris.id: "paris", london.id: "london", tokyo.id: "tokyo"}[d.subscriber_id] for d in found}

    assert claimable(at, 20) == {"paris", "london", "tokyo"}
    assert claimable(at, 7) == {"london", "tokyo"}  # Paris was due 8.5 hours ago
    assert claimable(datetime(2026, 8, 19, 15, 30, tzinfo=UTC), 20) == {"paris", "london"}  # Tokyo's day is over
    # Without the rules (a manual send of that date) every pending record goes.
    assert len(any_store.claim_deliveries("w", at + timedelta(days=2), 60, 10, issue_date=day)) == 3


def test_a_loaded_issue_has_the_selections_top_pick_when_scores_tie(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="tie@example.org"), NOW)
    any_store.upsert_papers([p("t2"), p("t1"), p("t3")], NOW)
    got = {x.id: x for x in any_store.list_papers(ids=["t1", "t2", "t3"])}
    # Sections in the reader's order put t2 first; the selection ranks by score, then paper id: t1.
    issue = Issue(sub, date(2026, 8, 19), (IssueSection("nas", "NAS", (IssueEntry(got["t2"], "a", 2.5),)),
                                           IssueSection("other", "Other", (IssueEntry(got["t3"], "b", 1.0),
                                                                           IssueEntry(got["t1"], "c", 2.5)))))
    issue_id = any_store.create_issue(issue, "", lambda n: f"<t{n}@x>", NOW)
    loaded = any_store.load_issue(issue_id, {"nas": "NAS"})
    assert loaded is not None and loaded.top_pick is not None and loaded.top_pick.paper.id == "t1"


def test_an_issue_keeps_its_subject(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="s@example.org"), NOW)
    any_store.upsert_papers([p("s1")], NOW)
    [paper] = any_store.list_papers(ids=["s1"])
    issue = Issue(sub, date(2026, 8, 19), (IssueSection("nas", "NAS", (IssueEntry(paper, "why", 1.0),)),))
    assert any_store.create_issues([issue], lambda n, s: f"<s{n}@x>", NOW, subject=lambda i: f"{i.count} paper") == 1
    [row] = any_store.list_issues()
    assert (row.subject, row.paper_count, row.status) == ("1 paper", 1, DeliveryStatus.PENDING)


def test_expired_lease_is_claimable_again(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="r@example.org"), NOW)
    _issue(any_store, sub, date(2026, 8, 19), ["c1"])
    assert any_store.claim_deliveries("dead", NOW, 60, 10)
    assert any_store.claim_deliveries("alive", NOW + timedelta(seconds=61), 60, 10)


def test_interrupted_send_is_recovered_as_in_doubt(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="r@example.org"), NOW)
    _issue(any_store, sub, date(2026, 8, 19), ["d1"])
    [claim] = any_store.claim_deliveries("dead", NOW, 60, 10)
    any_store.mark_sending(claim.id, "dead", NOW, 60)
    assert any_store.recover_interrupted(NOW + timedelta(seconds=30), resend_in_doubt=True) == 0  # lease alive
    assert any_store.recover_interrupted(NOW + timedelta(seconds=61), resend_in_doubt=True) == 1
    record = any_store.get_delivery(claim.id)
    assert record is not None and record.status is DeliveryStatus.PENDING and record.in_doubt


def test_failed_issue_papers_do_not_count_as_received(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="r@example.org"), NOW)
    _issue(any_store, sub, date(2026, 8, 19), ["e1"])
    [claim] = any_store.claim_deliveries("w", NOW, 60, 10)
    any_store.mark_outcome(claim.id, DeliveryStatus.FAILED, NOW, "550 no such user")
    assert any_store.received_paper_ids(sub.id) == set()  # type: ignore[arg-type]


def test_hard_bounces_suppress_at_threshold(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="r@example.org"), NOW)
    assert not any_store.record_hard_bounce(sub.id, 2)  # type: ignore[arg-type]
    assert any_store.record_hard_bounce(sub.id, 2)  # type: ignore[arg-type]
    got = any_store.get_subscriber("r@example.org")
    assert got is not None and got.status is SubscriberStatus.SUPPRESSED


def test_exclusive_lock_admits_one_holder(any_store: Store) -> None:
    other = Store(any_store.url, migrate=False)
    try:
        with any_store.exclusive("daemon"), pytest.raises(UsageError, match="already running"), \
                other.exclusive("daemon"):
            pass
        with other.exclusive("daemon"):  # released: the next holder gets it
            pass
    finally:
        other.close()


def test_feedback_one_verdict_per_reader_and_paper_gone_with_the_reader(any_store: Store) -> None:
    from digest.models import Verdict

    any_store.upsert_papers([p("2408.00001"), p("2408.00002"), p("2408.00003")], NOW)
    ada = any_store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    bob = any_store.add_subscriber(Subscriber(email="bob@example.org"), NOW)
    assert ada.id is not None and bob.id is not None
    later = NOW + timedelta(hours=1)
    assert any_store.set_feedback(ada.id, [("2408.00001", Verdict.MORE), ("2408.00002", Verdict.LESS)], NOW) == 2
    assert any_store.set_feedback(ada.id, [("2408.00001", Verdict.MORE)], later) == 0  # same again: no change
    assert any_store.set_feedback(ada.id, [("2408.00002", Verdict.MORE)], later) == 1  # replaces
    any_store.set_feedback(bob.id, [("2408.00003", Verdict.LESS)], NOW)
    got = any_store.list_feedback(ada.id)
    assert [(f.paper_id, f.verdict, f.at) for f in got] == [("2408.00001", Verdict.MORE, NOW),
                                                            ("2408.00002", Verdict.MORE, later)]
    assert set(any_store.feedback_of([ada.id, bob.id, 999])) == {ada.id, bob.id}
    assert any_store.clear_feedback(ada.id, "2408.00002") == 1
    assert any_store.clear_feedback(ada.id, "2408.00002") == 0
    assert any_store.paper_ids_known(["2408.00001", "9999.00001"]) == {"2408.00001"}
    assert any_store.paper_ids_by_title_key([title_key("Title 2408.00003")]) == {
        title_key("Title 2408.00003"): "2408.00003"}
    assert any_store.remove_subscriber("ada@example.org")
    with any_store.engine.connect() as conn:
        from digest.store import schema

        rows = conn.execute(schema.feedback.select()).all()
    assert [(r.subscriber_id, r.paper_id) for r in rows] == [(bob.id, "2408.00003")]


def test_an_unexplained_refusal_counts_only_when_repeated_on_a_later_issue(any_store: Store) -> None:
    ada = any_store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    bob = any_store.add_subscriber(Subscriber(email="bob@example.org"), NOW)
    d1, d2, d3, d4 = (date(2026, 8, 17) + timedelta(days=k) for k in range(4))
    assert ada.id is not None and bob.id is not None
    # Once, or again on the same issue: nothing to count yet.
    assert not any_store.record_unexplained_refusal(ada.id, d1, "recipient refused: 550 no", NOW)
    assert not any_store.record_unexplained_refusal(ada.id, d1, "recipient refused: 550 no", NOW)
    assert any_store.unexplained_refusal(ada.id) == (d1, "recipient refused: 550 no")
    # Again on a later issue: the address is refused, and the memory is spent.
    assert any_store.record_unexplained_refusal(ada.id, d2, "recipient refused: 550 no", NOW)
    assert any_store.unexplained_refusal(ada.id) is None
    # A message delivered in between shows the address works: the next refusal starts over.
    assert not any_store.record_unexplained_refusal(bob.id, d1, "550 relay not permitted", NOW)
    issue_id = _issue(any_store, bob, d2, ["u1"])
    [claim] = any_store.claim_deliveries("w1", NOW, 60, 10, issue_date=d2)
    assert claim.issue_id == issue_id and any_store.mark_sending(claim.id, "w1", NOW, 60)
    any_store.mark_outcome(claim.id, DeliveryStatus.SENT, NOW)
    assert not any_store.record_unexplained_refusal(bob.id, d3, "550 relay not permitted", NOW)
    assert any_store.unexplained_refusal(bob.id) == (d3, "550 relay not permitted")
    assert any_store.record_unexplained_refusal(bob.id, d4, "550 relay not permitted", NOW)
    # It goes with the reader.
    assert not any_store.record_unexplained_refusal(ada.id, d3, "550 no", NOW)
    assert any_store.remove_subscriber("ada@example.org")
    assert any_store.unexplained_refusal(ada.id) is None


def test_pending_records_left_are_counted_and_held_ones_released(any_store: Store) -> None:
    sub = any_store.add_subscriber(Subscriber(email="r@example.org"), NOW)
    day = date(2026, 8, 19)
    _issue(any_store, sub, day, ["c1"])
    [claim] = any_store.claim_deliveries("w1", NOW, 60, 10, issue_date=day)
    assert any_store.count_pending(day, NOW) == 0  # another sender holds it
    assert any_store.mark_sending(claim.id, "w1", NOW, 60)
    later = NOW + timedelta(hours=1)
    any_store.settle([AttemptEnd(claim.id, DeliveryStatus.PENDING, "held back", later)], [], "w1", NOW, 60)
    assert any_store.count_pending(day, NOW) == 1 and any_store.claim_deliveries("w2", NOW, 60, 10) == []
    assert any_store.release_held([claim.id]) == 1
    assert [d.id for d in any_store.claim_deliveries("w2", NOW, 60, 10)] == [claim.id]
    any_store.release_claims("w2")
    failed = AttemptEnd(claim.id, DeliveryStatus.FAILED, "recipient refused: 550 5.1.1 no such user")
    assert any_store.fail_held([failed], NOW) == {claim.id}
    assert any_store.fail_held([failed], NOW) == set()  # no longer pending
    assert any_store.count_pending(day, NOW) == 0
