"""Three simulated days of recorded HF listings, five subscribers: the personal-issue guarantees hold."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from httpserver import HttpServer, Reply

from digest.keywords import fold, keyword_matches
from digest.mail import MemoryMailer
from digest.models import Paper, Subscriber
from digest.pipeline import Pipeline
from digest.selection import _author_key
from digest.store import Store
from tests.conftest import make_settings

DAYS = Path(__file__).resolve().parents[1] / "fixtures" / "days"
DATES = [date(2026, 8, 18), date(2026, 8, 19), date(2026, 8, 20)]


def _word(word: str, text: str) -> bool:
    # A keyword matches its inflections ("agent" = "agents"), as digest.keywords documents; the exact
    # inflection rules are tested in tests/unit/test_keywords.py.
    return keyword_matches(word, fold(text))


@pytest.fixture
def served_days(http_server: HttpServer) -> HttpServer:
    bodies = {d: json.loads((DAYS / f"{d.isoformat()}.json").read_text()) for d in DATES}
    # Day three also lists five papers from day one again (a paper "coming back" with more upvotes).
    comeback = bodies[DATES[0]][:5]
    for entry in comeback:
        entry["paper"]["upvotes"] = entry["paper"].get("upvotes", 0) + 100
    bodies[DATES[2]] = bodies[DATES[2]] + comeback
    for d, body in bodies.items():
        http_server.route("/api/daily_papers", Reply(body=json.dumps(body).encode(), content_type="application/json"),
                          query={"date": d.isoformat()})
    return http_server


def test_three_days_five_subscribers(tmp_path: Path, served_days: HttpServer) -> None:
    settings = make_settings(
        tmp_path,
        sources={"seed": {"enabled": False},
                 "hf_daily": {"enabled": True, "url": served_days.url("/api/daily_papers")}},
    )
    store = Store(settings.database.url)
    mailer = MemoryMailer()
    clock = {"now": datetime(2026, 8, 18, 21, 0, tzinfo=UTC)}
    pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: clock["now"],
                        http_client=httpx.Client(timeout=10))
    day2 = json.loads((DAYS / "2026-08-19.json").read_text())
    followed_author = day2[3]["paper"]["authors"][0]["name"]
    subs = [
        Subscriber(email="all@example.org", max_papers=10),
        Subscriber(email="diff@example.org", topics=("diffusion",), exclude=("video",)),
        Subscriber(email="kw@example.org", keywords=("reinforcement learning", "agent"), exclude=("robot",)),
        Subscriber(email="author@example.org", authors=(followed_author,), topics=("nas",)),
        Subscriber(email="mix@example.org", topics=("pruning", "subspace"), keywords=("benchmark",),
                   exclude=("medical", "video"), max_papers=4),
    ]
    for sub in subs:
        store.add_subscriber(sub)

    for day in DATES:
        clock["now"] = datetime(day.year, day.month, day.day, 21, 0, tzinfo=UTC)
        [summary] = pipeline.fetch(["hf_daily"], day)
        assert summary.errors == 0 and (summary.new > 0 or summary.updated > 0)
        pipeline.send(day)

    papers = {p.id: p for p in store.list_papers()}
    delivered: dict[str, list[str]] = {s.email: [] for s in subs}
    for sub in subs:
        stored = store.get_subscriber(sub.email)
        assert stored is not None and stored.id is not None
        for day in DATES:
            issue = store.find_issue(stored.id, day, pipeline.labels)
            if issue is not None:
                delivered[sub.email].extend(issue.paper_ids)

    assert sum(map(len, delivered.values())) > 20
    for sub in subs:
        got = delivered[sub.email]
        assert len(got) == len(set(got)), f"{sub.email} got a paper twice"
        for pid in got:
            paper = papers[pid]
            assert _qualifies(paper, sub), (sub.email, paper.title)
            text = f"{paper.title} {paper.abstract} {' '.join(paper.ai_keywords)}"
            assert not any(_word(word, text) for word in sub.exclude), (sub.email, paper.title)
    assert delivered["author@example.org"], "the followed author's paper was not delivered"

    # The mail itself agrees with the records: one message per built issue, each title once.
    assert len(mailer.outbox) == sum(1 for s in subs for d in DATES
                                     if store.issue_id_for(store.get_subscriber(s.email).id, d))  # type: ignore[union-attr]
    texts: dict[str, list[str]] = {s.email: [] for s in subs}
    for message in mailer.outbox:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        texts[message.recipient].append(" ".join(parsed.get_body(("plain",)).get_content().split()))  # type: ignore[union-attr]
    for address, pids in delivered.items():
        for pid in pids:
            title = " ".join(papers[pid].title.split())[:40]
            assert sum(title in text for text in texts[address]) == 1, (address, title)


def _qualifies(paper: Paper, sub: Subscriber) -> bool:
    if sub.follows_everything:
        return True
    text = f"{paper.title}\n{paper.abstract}\n{' '.join(paper.ai_keywords)}"
    by_topic = bool(set(sub.topics) & set(paper.topic_names))
    by_keyword = any(_word(k, text) for k in sub.keywords)
    by_author = {_author_key(a) for a in sub.authors} & {_author_key(a) for a in paper.authors}
    return by_topic or by_keyword or bool(by_author)
