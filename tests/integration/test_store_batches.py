"""The store's batch methods (what the fast send loop uses) agree with their one-at-a-time versions,
on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

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
    TopicAssignment,
)
from digest.store import Store

NOW = datetime(2026, 8, 19, 12, 0, tzinfo=UTC)
DAYS = [date(2026, 8, 17), date(2026, 8, 18), date(2026, 8, 19)]


def _papers(store: Store, ids: list[str]) -> dict[str, Paper]:
    store.upsert_papers([Paper(id=i, title=f"Title {i}", abstract=f"About {i}.") for i in ids], NOW)
    store.save_tags([Paper(id=i, title="", topics=(TopicAssignment("nas", 2.0, ("nas",)),)) for i in ids[::2]], NOW)
    return {p.id: p for p in store.list_papers(ids=ids)}


def _issue(sub: Subscriber, day: date, papers: list[Paper]) -> Issue:
    half = len(papers) // 2
    sections = (IssueSection("nas", "NAS", tuple(IssueEntry(p, f"because {p.id}", 2.0 - k / 10)
                                                  for k, p in enumerate(papers[:half]))),
                IssueSection("other", "Other papers", tuple(IssueEntry(p, "popular", 0.5) for p in papers[half:])))
    return Issue(sub, day, tuple(s for s in sections if s.entries))


def test_create_issues_writes_each_once_and_load_issues_reads_them_back(any_store: Store) -> None:
    subs = [any_store.add_subscriber(Subscriber(email=f"r{i}@example.org"), NOW) for i in range(5)]
    papers = _papers(any_store, [f"p{i}" for i in range(8)])
    ordered = list(papers.values())
    issues = [_issue(sub, DAYS[2], ordered[i:i + 4]) for i, sub in enumerate(subs)]
    # One reader already has an issue that day (another sender built it): theirs is kept.
    kept = any_store.create_issue(issues[3], "", lambda n: f"<single.{n}@x>", NOW)

    written = any_store.create_issues(issues, lambda n, sub: f"<{n}.{sub.email}>", NOW)
    assert written == 4
    assert any_store.create_issues(issues, lambda n, sub: f"<{n}.{sub.email}>", NOW) == 0  # idempotent

    ids = [any_store.issue_id_for(sub.id or 0, DAYS[2]) for sub in subs]
    assert ids[3] == kept and None not in ids
    labels = {"nas": "NAS"}
    cache: dict[str, Paper] = {}
    loaded = any_store.load_issues([i for i in ids if i is not None] + [999_999], labels, cache)
    assert sorted(loaded) == sorted(i for i in ids if i is not None)  # the unknown id is left out
    for issue_id in loaded:
        assert loaded[issue_id] == any_store.load_issue(issue_id, labels)
    assert [e.paper.id for e in loaded[ids[0] or 0].entries] == [p.id for p in ordered[0:4]]
    # Papers are read once and shared: the same object wherever the same paper appears.
    assert loaded[ids[0] or 0].entries[1].paper is loaded[ids[1] or 0].entries[0].paper
    assert set(cache) == set(papers)
    for sub, issue_id in zip(subs, ids, strict=True):
        delivery = any_store.delivery_for_issue(issue_id or 0)
        assert delivery is not None and delivery.status is DeliveryStatus.PENDING
        expected = f"<single.{issue_id}@x>" if issue_id == kept else f"<{issue_id}.{sub.email}>"
        assert delivery.message_id == expected


def test_issue_histories_agree_with_the_single_reader_queries(any_store: Store) -> None:
    subs = [any_store.add_subscriber(Subscriber(email=f"h{i}@example.org"), NOW) for i in range(4)]
    papers = list(_papers(any_store, [f"q{i}" for i in range(10)]).values())
    # Reader 0: two earlier issues, one sent and one failed; reader 1: an issue today, sent;
    # reader 2: an issue today, still pending; reader 3: nothing.
    for k, (sub, day, chosen) in enumerate([(subs[0], DAYS[0], papers[0:3]), (subs[0], DAYS[1], papers[3:6]),
                                            (subs[1], DAYS[2], papers[6:8]), (subs[2], DAYS[2], papers[8:10])]):
        any_store.create_issue(_issue(sub, day, chosen), "", lambda n, k=k: f"<h{k}.{n}@x>",
                               NOW - timedelta(days=2 - DAYS.index(day)))
    claims = {c.subscriber_id: c for c in any_store.claim_deliveries("w", NOW, 60, 10)}
    first_of_0 = min((c for c in any_store.claim_deliveries("w2", NOW + timedelta(seconds=61), 60, 10)
                      if c.subscriber_id == subs[0].id), key=lambda c: c.id, default=None)
    assert first_of_0 is not None
    any_store.mark_outcome(first_of_0.id, DeliveryStatus.SENT, NOW)
    later = [c for c in claims.values() if c.id != first_of_0.id]
    for claim in later:
        if claim.subscriber_id == subs[0].id:
            any_store.mark_outcome(claim.id, DeliveryStatus.FAILED, NOW, "550 gone")
        elif claim.subscriber_id == subs[1].id:
            any_store.mark_outcome(claim.id, DeliveryStatus.SENT, NOW)

    ids = [sub.id or 0 for sub in subs]
    histories = any_store.issue_histories(ids, DAYS[2])
    recent = any_store.issue_histories(ids, DAYS[2], papers_since=NOW - timedelta(hours=1))
    assert sorted(histories) == sorted(ids)
    for sub_id in ids:
        history = histories[sub_id]
        issue_id = any_store.issue_id_for(sub_id, DAYS[2])
        assert history.issue_id == issue_id
        delivery = any_store.delivery_for_issue(issue_id) if issue_id else None
        assert history.delivery == (delivery.status if delivery else None)
        assert history.received == any_store.received_paper_ids(sub_id, exclude_date=DAYS[2])
        assert history.last_issue_at == any_store.last_issue_time(sub_id, before=DAYS[2])
        # Issues built more than two days before papers_since are not read for received papers.
        assert recent[sub_id].received <= history.received
    assert histories[ids[0]].received == {p.id for p in papers[0:3]}  # the failed issue does not count
    assert histories[ids[1]].delivery is DeliveryStatus.SENT
    assert histories[ids[2]].delivery is DeliveryStatus.PENDING
    assert histories[ids[3]].issue_id is None and histories[ids[3]].last_issue_at is None


def test_settle_records_outcomes_and_marks_only_this_workers_pending_claims(any_store: Store) -> None:
    subs = [any_store.add_subscriber(Subscriber(email=f"s{i}@example.org"), NOW) for i in range(5)]
    papers = list(_papers(any_store, ["s1", "s2"]).values())
    any_store.create_issues([_issue(sub, DAYS[2], papers) for sub in subs], lambda n, sub: f"<{n}@x>", NOW)
    mine = any_store.claim_deliveries("me", NOW, 60, 4)
    theirs = any_store.claim_deliveries("them", NOW, 60, 4)
    assert len(mine) == 4 and len(theirs) == 1

    marked = any_store.settle([], [mine[0].id, mine[1].id, theirs[0].id], "me", NOW, 60)
    assert marked == {mine[0].id, mine[1].id}
    later = NOW + timedelta(seconds=5)
    retry_at = later + timedelta(minutes=2)
    marked = any_store.settle(
        [AttemptEnd(mine[0].id, DeliveryStatus.SENT),
         AttemptEnd(mine[1].id, DeliveryStatus.PENDING, "451 try later", next_attempt_at=retry_at)],
        [mine[2].id], "me", later, 60)
    assert marked == {mine[2].id}
    sent, deferred, sending = (any_store.get_delivery(d.id) for d in mine[:3])
    assert sent is not None and sent.status is DeliveryStatus.SENT and sent.sent_at == later
    assert sent.attempts == 1 and sent.last_error is None
    assert deferred is not None and deferred.status is DeliveryStatus.PENDING
    assert deferred.next_attempt_at == retry_at and deferred.last_error == "451 try later"
    assert sending is not None and sending.status is DeliveryStatus.SENDING and sending.attempts == 1
    # A record "sending" is what a killed sender leaves: recovered as in doubt once its lease ends.
    assert any_store.recover_interrupted(later + timedelta(seconds=61), resend_in_doubt=True) == 1
    any_store.settle([AttemptEnd(mine[3].id, DeliveryStatus.FAILED, "subscriber no longer active")], [], "me",
                     later, 60)
    failed = any_store.get_delivery(mine[3].id)
    assert failed is not None and failed.status is DeliveryStatus.FAILED and failed.sent_at is None
    assert any_store.delivery_counts(DAYS[2]) == {"sent": 1, "pending": 3, "failed": 1}


def test_add_subscribers_in_one_go(any_store: Store) -> None:
    assert any_store.add_subscribers([Subscriber(email=f"b{i}@example.org", topics=("nas",)) for i in range(3)],
                                     NOW) == 3
    assert [s.email for s in any_store.iter_subscribers()] == [f"b{i}@example.org" for i in range(3)]
    with pytest.raises(UsageError):
        any_store.add_subscribers([Subscriber(email="new@example.org"), Subscriber(email="b1@example.org")], NOW)
    assert any_store.get_subscriber("new@example.org") is None  # nothing of a failed batch is kept
