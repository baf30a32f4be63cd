"""Selection rules, with a fixed ``now``: qualify, exclude, rank, cut, never twice, windows, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from digest.models import OTHER_SECTION, Frequency, Paper, Subscriber, TopicAssignment
from digest.selection import (
    SelectionContext,
    is_due,
    local_issue_date,
    select,
    send_time_passed,
    window_start,
)

NOW = datetime(2026, 8, 19, 12, 0, tzinfo=UTC)
CTX = SelectionContext(labels={"pruning": "Pruning", "diffusion": "Diffusion", "subspace": "Subspace",
                               "nas": "NAS"})


def paper(pid: str, topics: dict[str, float] | None = None, *, title: str = "", abstract: str = "",
          authors: tuple[str, ...] = (), upvotes: int | None = None, age_hours: float = 1.0) -> Paper:
    return Paper(
        id=pid, title=title or f"Paper {pid}", abstract=abstract or "An abstract.", authors=authors,
        upvotes=upvotes, first_seen=NOW - timedelta(hours=age_hours),
        topics=tuple(TopicAssignment(t, s, (f"{t} evidence",)) for t, s in (topics or {}).items()),
    )


def sub(**kw: object) -> Subscriber:
    return Subscriber(email="r@example.org", id=1, **kw)  # type: ignore[arg-type]


def ids(issue) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.paper.id for e in issue.entries]


def test_followed_topic_qualifies_and_others_do_not() -> None:
    papers = [paper("a", {"pruning": 3}), paper("b", {"diffusion": 3}), paper("c")]
    issue = select(papers, sub(topics=("pruning",)), set(), NOW, NOW.date(), CTX)
    assert ids(issue) == ["a"]
    assert issue.sections[0].topic == "pruning"
    assert "Pruning" in issue.entries[0].reason


def test_follows_everything_without_preferences_including_other() -> None:
    papers = [paper("a", {"pruning": 3}), paper("b", {"diffusion": 3}), paper("c")]
    issue = select(papers, sub(), set(), NOW, NOW.date(), CTX)
    assert sorted(ids(issue)) == ["a", "b", "c"]
    assert issue.sections[-1].topic == OTHER_SECTION


def test_keyword_and_author_qualify_without_topic() -> None:
    papers = [paper("k", title="Low-rank adapters revisited"), paper("au", authors=("Y. LeCun", "B. C")),
              paper("none")]
    issue = select(papers, sub(keywords=("low rank",), authors=("Yann LeCun",)), set(), NOW, NOW.date(), CTX)
    assert sorted(ids(issue)) == ["au", "k"]
    reasons = {e.paper.id: e.reason for e in issue.entries}
    assert "LeCun" in reasons["au"] and "low rank" in reasons["k"]


def test_exclude_wins_over_every_match() -> None:
    papers = [paper("a", {"pruning": 5}, title="Pruning for medical imaging", authors=("Yann LeCun",)),
              paper("b", {"pruning": 2})]
    s = sub(topics=("pruning",), authors=("Yann LeCun",), exclude=("medical",))
    assert ids(select(papers, s, set(), NOW, NOW.date(), CTX)) == ["b"]


def test_exclude_is_a_whole_word_match() -> None:
    papers = [paper("a", {"pruning": 5}, abstract="We study premedical students.")]
    assert ids(select(papers, sub(topics=("pruning",), exclude=("medical",)), set(), NOW, NOW.date(), CTX)) == ["a"]


def test_followed_author_ranks_first_and_cut_keeps_best() -> None:
    papers = [paper(f"p{i}", {"pruning": 1 + i}, upvotes=10 * i) for i in range(6)]
    papers.append(paper("fav", {"pruning": 1}, authors=("Song Han",)))
    s = sub(topics=("pruning",), authors=("Song Han",), max_papers=3)
    issue = select(papers, s, set(), NOW, NOW.date(), CTX)
    assert ids(issue) == ["fav", "p5", "p4"]
    assert issue.top_pick is not None and issue.top_pick.paper.id == "fav"


def test_trend_breaks_ties_between_equal_relevance() -> None:
    papers = [paper("cold", {"pruning": 3}, upvotes=0), paper("hot", {"pruning": 3}, upvotes=150)]
    assert ids(select(papers, sub(topics=("pruning",)), set(), NOW, NOW.date(), CTX))[0] == "hot"


def test_never_twice_even_as_new_version() -> None:
    v2 = Paper(id="2403.00001", title="T", abstract="A", version=2, first_seen=NOW,
               topics=(TopicAssignment("pruning", 3),))
    issue = select([v2], sub(topics=("pruning",)), {"2403.00001"}, NOW, NOW.date(), CTX)
    assert issue.count == 0


def test_sections_follow_subscriber_topic_order() -> None:
    papers = [paper("a", {"pruning": 3}), paper("b", {"diffusion": 3}), paper("c", {"nas": 3})]
    issue = select(papers, sub(topics=("nas", "diffusion", "pruning")), set(), NOW, NOW.date(), CTX)
    assert [s.topic for s in issue.sections] == ["nas", "diffusion", "pruning"]


def test_multi_topic_paper_appears_once_in_first_followed_section() -> None:
    papers = [paper("a", {"pruning": 3, "nas": 2})]
    issue = select(papers, sub(topics=("nas", "pruning")), set(), NOW, NOW.date(), CTX)
    assert [s.topic for s in issue.sections] == ["nas"] and issue.count == 1


def test_daily_window_is_since_last_issue() -> None:
    last = NOW - timedelta(hours=5)
    s = sub(topics=("pruning",))
    since = window_start(s, NOW, last, CTX)
    papers = [paper("old", {"pruning": 3}, age_hours=6), paper("new", {"pruning": 3}, age_hours=2)]
    assert ids(select(papers, s, set(), NOW, NOW.date(), CTX, since=since)) == ["new"]


def test_first_daily_issue_is_capped_at_window_days() -> None:
    assert window_start(sub(), NOW, None, CTX) == NOW - timedelta(days=CTX.daily_window_days)


def test_weekly_window_is_the_past_week() -> None:
    s = sub(frequency=Frequency.WEEKLY)
    since = window_start(s, NOW, NOW - timedelta(days=1), CTX)
    assert since == NOW - timedelta(days=7)
    papers = [paper("wk", {"pruning": 3}, age_hours=24 * 6), paper("old", {"pruning": 3}, age_hours=24 * 8)]
    assert ids(select(papers, s, set(), NOW, NOW.date(), CTX, since=since)) == ["wk"]


def test_weekly_due_only_on_its_weekday() -> None:
    s = sub(frequency=Frequency.WEEKLY, weekday=2)  # Wednesday
    assert is_due(s, date(2026, 8, 19))  # a Wednesday
    assert not is_due(s, date(2026, 8, 20))
    assert is_due(sub(), date(2026, 8, 20))


def test_time_zone_edges_same_instant_different_days() -> None:
    instant = datetime(2026, 8, 19, 11, 30, tzinfo=UTC)
    east = sub(tz="Pacific/Tongatapu", send_at=time(7, 0))  # UTC+13
    west = sub(tz="Pacific/Honolulu", send_at=time(7, 0))  # UTC-10
    assert local_issue_date(east, instant) == date(2026, 8, 20)
    assert local_issue_date(west, instant) == date(2026, 8, 19)
    # 11:30 UTC is 01:30 on the 19th in Honolulu and 00:30 on the 20th in Tonga: neither is due yet.
    assert not send_time_passed(west, instant)
    assert not send_time_passed(east, instant)
    assert send_time_passed(sub(tz="Pacific/Honolulu", send_at=time(1, 0)), instant)
    # At 18:30 UTC both have passed 07:00 local, on different local dates.
    later = datetime(2026, 8, 19, 18, 30, tzinfo=UTC)
    assert send_time_passed(west, later) and send_time_passed(east, later)
    assert (local_issue_date(west, later), local_issue_date(east, later)) == (date(2026, 8, 19), date(2026, 8, 20))


def test_empty_issue_when_nothing_matches() -> None:
    issue = select([paper("a", {"diffusion": 3})], sub(topics=("pruning",)), set(), NOW, NOW.date(), CTX)
    assert issue.count == 0 and issue.sections == () and issue.top_pick is None
