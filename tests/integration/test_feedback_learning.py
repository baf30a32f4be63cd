"""The digest learns a reader: ten real recorded Hugging Face days (tests/fixtures/days), readers who
follow everything (5 papers a day) and whose hidden interest is a narrow theme (papers about agents, by a
keyword rule on the title: the simulation's ground truth, never shown to the digest).

One reader clicks "More like this" on the theme's papers of their issue and "Less like this" on the rest,
for five days; another starts from an imported BibTeX file of the theme's papers of those days; a third
gives no feedback. Over the next five days the theme's share of the first two readers' issues must be
at least 0.6 and at least twice the third's. A reader without feedback gets byte for byte the issue they
got before feedback existed; exclusions still win; never a paper twice.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from digest.feedback import import_library
from digest.mail import MemoryMailer
from digest.models import Issue, Paper, Subscriber, Verdict
from digest.pipeline import Pipeline
from digest.sources.hf_daily import parse_daily_papers
from digest.store import Store
from tests.conftest import make_settings

DAYS = Path(__file__).resolve().parents[1] / "fixtures" / "days"
TRAIN = [date(2026, 8, d) for d in (4, 5, 6, 7, 10)]
EVALUATE = [date(2026, 8, d) for d in (11, 12, 13, 14, 17)]
# The hidden interest: a paper whose title is about agents ("agent", "agents", "agentic").
THEME = re.compile(r"\bagent(s|ic)?\b", re.IGNORECASE)
PER_DAY = 5


def in_theme(paper: Paper) -> bool:
    return THEME.search(paper.title) is not None


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = make_settings(tmp_path, sources={"seed": {"enabled": False}})
        self.store = Store(self.settings.database.url)
        self.clock = datetime(2026, 8, 4, 6, 0, tzinfo=UTC)
        self.pipeline = Pipeline(self.settings, self.store, mailer=MemoryMailer(), clock=lambda: self.clock)

    def reader(self, address: str, **kw: object) -> Subscriber:
        return self.store.add_subscriber(Subscriber(email=address, max_papers=PER_DAY, **kw))  # type: ignore[arg-type]

    def day(self, day: date) -> None:
        """The day's listing arrives in the morning, the issues go out in the evening."""
        self.clock = datetime.combine(day, time(6, 0), tzinfo=UTC)
        self.store.upsert_papers(parse_daily_papers((DAYS / f"{day.isoformat()}.json").read_bytes()), self.clock)
        self.pipeline.tag_pending()
        self.clock = datetime.combine(day, time(21, 0), tzinfo=UTC)
        self.pipeline.send(day)

    def issue(self, sub: Subscriber, day: date) -> Issue | None:
        assert sub.id is not None
        return self.store.find_issue(sub.id, day, self.pipeline.labels)


def _share(world: World, sub: Subscriber, days: list[date]) -> tuple[float, int]:
    papers = [e.paper for d in days if (i := world.issue(sub, d)) is not None for e in i.entries]
    return (sum(map(in_theme, papers)) / len(papers) if papers else 0.0), len(papers)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, dict[str, Subscriber]]:
    world = World(tmp_path_factory.mktemp("learning"))
    readers = {
        "clicks": world.reader("clicks@example.org"),
        "library": world.reader("library@example.org"),
        "control": world.reader("control@example.org"),
        "excludes": world.reader("excludes@example.org", exclude=("benchmark",)),
    }
    theme_seen: list[Paper] = []
    for day in TRAIN:
        world.day(day)
        theme_seen += [p for p in world.store.list_papers() if in_theme(p) and p not in theme_seen]
        for name in ("clicks", "excludes"):
            issue = world.issue(readers[name], day)
            assert issue is not None
            verdicts = [(e.paper.id, Verdict.MORE if in_theme(e.paper) else Verdict.LESS) for e in issue.entries]
            world.store.set_feedback(readers[name].id or 0, verdicts, world.clock)
    # The second reader's library: a BibTeX export of the theme's papers of those days (titles and
    # arXiv ids as Google Scholar writes them), imported once.
    bib = "\n".join(f"@article{{p{i},\n  title = {{{p.title}}},\n  journal = {{arXiv preprint arXiv:{p.id}}}\n}}"
                    for i, p in enumerate(theme_seen))
    result = import_library(world.store, readers["library"], bib.encode(), "library.bib", world.clock)
    assert result.used == len(theme_seen) and not result.not_found
    for day in EVALUATE:
        world.day(day)
    return world, readers


def test_the_theme_grows_for_readers_who_teach_the_digest(learned: tuple[World, dict[str, Subscriber]]) -> None:
    world, readers = learned
    control, n_control = _share(world, readers["control"], EVALUATE)
    clicks, n_clicks = _share(world, readers["clicks"], EVALUATE)
    library, n_library = _share(world, readers["library"], EVALUATE)
    available = sum(min(PER_DAY, sum(map(in_theme, world.store.list_papers(
        since=datetime.combine(d, time(0), tzinfo=UTC), until=datetime.combine(d, time(23), tzinfo=UTC)))))
        for d in EVALUATE)
    print(f"\ntheme share over the last five days: clicks={clicks:.2f} ({n_clicks} papers) "
          f"library={library:.2f} ({n_library}) control={control:.2f} ({n_control}); "
          f"best possible {available / (PER_DAY * len(EVALUATE)):.2f}")
    assert n_clicks == n_library == n_control == PER_DAY * len(EVALUATE)
    assert clicks >= 0.6 and clicks >= 2 * control
    assert library >= 0.6 and library >= 2 * control


def test_never_twice_and_never_a_paper_with_a_verdict(learned: tuple[World, dict[str, Subscriber]]) -> None:
    world, readers = learned
    for sub in readers.values():
        ids = [e.paper.id for d in TRAIN + EVALUATE if (i := world.issue(sub, d)) is not None for e in i.entries]
        assert len(ids) == len(set(ids)), sub.email
    library = readers["library"]
    imported = {f.paper_id for f in world.store.list_feedback(library.id or 0)}
    shown = {e.paper.id for d in EVALUATE if (i := world.issue(library, d)) is not None for e in i.entries}
    assert not imported & shown


def test_exclusions_still_win(learned: tuple[World, dict[str, Subscriber]]) -> None:
    world, readers = learned
    for day in TRAIN + EVALUATE:
        issue = world.issue(readers["excludes"], day)
        assert issue is not None
        for entry in issue.entries:
            assert "benchmark" not in f"{entry.paper.title} {entry.paper.abstract}".lower(), entry.paper.title


def test_a_reader_without_feedback_gets_the_same_mail_as_before(learned: tuple[World, dict[str, Subscriber]],
                                                                 tmp_path: Path) -> None:
    """The same ten days in a world where nobody gives feedback: the control reader's mails are byte
    for byte the ones they got in the world where others taught the digest."""
    world, readers = learned
    plain = World(tmp_path)
    for name in ("clicks", "library", "control", "excludes"):
        plain.reader(readers[name].email, exclude=readers[name].exclude)
    for day in TRAIN + EVALUATE:
        plain.day(day)
    assert plain.store.readers_with_feedback() == set()

    def shape(w: World, day: date) -> tuple[object, ...]:
        issue = w.issue(w.store.get_subscriber("control@example.org") or readers["control"], day)
        assert issue is not None
        return (w.pipeline.composer.subject(issue), issue.top_pick and issue.top_pick.paper.id,
                [(s.topic, s.label, [(e.paper.id, e.reason, e.score) for e in s.entries]) for s in issue.sections])

    for day in TRAIN + EVALUATE:
        assert shape(world, day) == shape(plain, day), day
    # And so the same mail: the renderer is given the same issue (test_render_identity covers the rest).
    day = EVALUATE[-1]
    issue = world.issue(readers["control"], day)
    assert issue is not None
    mail = world.pipeline.render_message(issue, "<m@x>", world.clock).data
    again = world.issue(readers["control"], day)
    assert again is not None and world.pipeline.render_message(again, "<m@x>", world.clock).data == mail


def test_a_liked_paper_outside_the_readers_topics_is_admitted_with_its_reason(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.day(TRAIN[0])
    papers = world.store.list_papers()
    theme = [p for p in papers if in_theme(p)]
    assert theme
    # A reader who follows one topic none of the theme papers has, and liked one of them.
    topics_of_theme = {a.topic for p in theme for a in p.topics}
    other_topic = next(t for t in world.pipeline.labels if t not in topics_of_theme)
    sub = world.reader("narrow@example.org", topics=(other_topic,))
    liked = theme[0]
    world.store.set_feedback(sub.id or 0, [(liked.id, Verdict.MORE)], world.clock)
    world.store.upsert_papers([Paper(id="2608.99999", title=liked.title + " revisited", abstract=liked.abstract)],
                              world.clock)
    world.pipeline.tag_pending()
    issue = world.pipeline.issues.build(sub, TRAIN[0], world.clock)
    admitted = [e for e in issue.entries if e.reason.startswith("Because you liked: ")]
    assert any(e.paper.id == "2608.99999" for e in admitted)
    assert all(e.reason == f"Because you liked: {liked.title}" for e in admitted if e.paper.id == "2608.99999")
    assert liked.id not in {e.paper.id for e in issue.entries}
    print(json.dumps([(e.paper.id, e.reason[:60]) for e in issue.entries], indent=1))
