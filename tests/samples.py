"""Sample papers, readers and issues, made from the recorded papers in tests/fixtures: for the tests, and
for the benchmarks (benchmarks/), which generate their workload with the same functions and seed.

``make_papers`` and ``make_subscribers`` make the ``digest bench`` workload (recorded papers, more made by
pairing their titles and abstracts anew; readers with mixed preferences); ``load_papers``,
``issue_of``, ``sample_issue`` and ``make_jobs`` make issues directly, without a database.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from digest.config import Settings
from digest.errors import UsageError
from digest.links import LinkBuilder, PersonalLinks, Signer
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from digest.tagger import Tagger

OTHER = "other"
PAPERS_FILE = Path(__file__).resolve().parent / "fixtures" / "render" / "papers.jsonl"
BENCH_DATE = date(2026, 11, 27)
NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
SEED = 20261127

KEYWORDS = (
    "transformer", "reinforcement learning", "benchmark", "video generation", "language model", "robot",
    "graph neural network", "3d", "agent", "reasoning", "speech", "medical", "quantization", "distillation",
    "retrieval", "multimodal", "diffusion", "pruning", "federated learning", "vision-language", "attention",
    "mixture of experts", "low-rank", "segmentation", "code generation", "alignment", "tokenizer", "safety",
)
TIME_ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney")


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One email to render: the issue, the subscriber's links, and the delivery facts for the headers."""

    issue: Issue
    links: PersonalLinks


def load_papers(path: Path, settings: Settings | None = None) -> list[Paper]:
    """Papers from a JSON-lines file (``id``, ``title``, ``abstract``, ``authors`` ...), tagged with the
    configured topics so sample issues have real sections."""
    tagger = Tagger((settings or Settings()).enabled_topics)
    papers = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        paper = Paper(
            id=row["id"], title=row["title"], abstract=row.get("abstract") or "",
            authors=tuple(row.get("authors") or ()), upvotes=row.get("upvotes"),
            ai_summary=row.get("ai_summary"), code_url=row.get("code_url"),
            project_url=row.get("project_url"), pdf_url=row.get("pdf_url"),
            categories=tuple(row.get("categories") or ()),
        )
        papers.append(tagger.tag_paper(paper))
    return papers


# Sample mail is signed like real mail, but with a throwaway key: a benchmark has no installation key
# to use (and must never put one in files it writes).
_SAMPLE_KEY = secrets.token_urlsafe(32)


def sample_key(settings: Settings) -> str:
    """The environment's signing key if set, else this process's throwaway key."""
    return settings.env_signing_key or _SAMPLE_KEY


def sample_links(settings: Settings, email: str, issue_key: str | None = None,
                 subscriber_id: int | None = 1) -> PersonalLinks:
    """The links a real send would put in ``email``'s message (signed like real links, see sample_key),
    feedback links included unless ``subscriber_id`` is None."""
    mailto = settings.site.unsubscribe_mailto or "digest@localhost"
    return LinkBuilder(settings.site.base_url, Signer(sample_key(settings)), mailto).for_subscriber(
        email, issue_key, subscriber_id)


def issue_of(sections: Sequence[tuple[str, str, Sequence[Paper]]], *, email: str = "reader@example.org",
             day: date = date(2026, 11, 27), top: bool = True, issue_id: int = 1) -> Issue:
    """An issue from ``(topic, label, papers)`` triples, each paper with a plain reason; the top pick is
    the most upvoted paper (when ``top``)."""
    built = tuple(
        IssueSection(topic, label, tuple(IssueEntry(p, f"matches {label.lower()}", 1.0) for p in papers))
        for topic, label, papers in sections
    )
    entries = [e for s in built for e in s.entries]
    pick = max(entries, key=lambda e: e.paper.upvotes or 0) if top and entries else None
    return Issue(subscriber=Subscriber(email=email, id=1), date=day, sections=built, top_pick=pick, id=issue_id)


def sample_issue(papers: Sequence[Paper], subscriber: Subscriber, day: date, settings: Settings,
                 issue_id: int = 1) -> Issue:
    """A plausible issue: the subscriber's topics (all when they follow everything), best scores first,
    at most ``subscriber.max_papers`` papers, never one twice; the rest of the budget from ``other``."""
    topics = settings.enabled_topics
    wanted = list(subscriber.topics) or list(topics)
    used: set[str] = set()
    by_topic: dict[str, list[IssueEntry]] = {t: [] for t in [*wanted, OTHER]}
    scored = sorted(papers, key=lambda p: -max((t.score for t in p.topics), default=0.0))
    for paper in scored:
        if len(used) >= subscriber.max_papers:
            break
        match = next((t for t in paper.topics if t.topic in by_topic and t.topic != OTHER), None)
        if match is not None:
            why = ", ".join(match.why[:3]) or topics[match.topic].label
            by_topic[match.topic].append(IssueEntry(paper, f"matches {why}", match.score))
            used.add(paper.id)
    for paper in papers:
        if len(used) >= subscriber.max_papers:
            break
        if paper.id not in used and not paper.topics:
            by_topic[OTHER].append(IssueEntry(paper, "popular today", 0.0))
            used.add(paper.id)
    sections = tuple(
        IssueSection(t, topics[t].label if t in topics else "Other papers", tuple(entries))
        for t, entries in by_topic.items() if entries
    )
    entries = [e for s in sections for e in s.entries]
    top = max(entries, key=lambda e: (e.paper.upvotes or 0, e.score)) if entries else None
    return Issue(subscriber=subscriber, date=day, sections=sections, top_pick=top, id=issue_id)


def make_jobs(papers: Sequence[Paper], settings: Settings, count: int, day: date, *, seed: int = 7,
              max_papers: int = 20, personal_share: float = 0.5) -> list[RenderJob]:
    """``count`` subscribers with mixed preferences and their issues over ``papers``.

    ``1 - personal_share`` of them follow topics only (everything, or one to three topics; 5, 10 or
    ``max_papers`` papers), so readers with the same choice get the same papers, as they would from the
    real selection. The rest also have keywords or authors of their own, modelled as an issue of their
    own: 5 to ``max_papers`` papers drawn from all of them, grouped by topic, best first.
    """
    rng = random.Random(seed)
    names = list(settings.enabled_topics)
    labels = {name: spec.label for name, spec in settings.enabled_topics.items()}
    issues_by_prefs: dict[tuple[tuple[str, ...], int], Issue] = {}
    jobs = []
    for i in range(count):
        chosen = () if rng.random() < 0.2 else tuple(sorted(rng.sample(names, rng.randint(1, min(3, len(names))))))
        limit = rng.choice([5, 10, max_papers, max_papers])
        email = f"reader{i}@example.org"
        subscriber = Subscriber(email=email, topics=chosen, max_papers=limit, id=i + 1)
        if rng.random() < personal_share:
            picked = rng.sample(list(papers), min(len(papers), rng.randint(5, max_papers)))
            groups: dict[str, list[Paper]] = {}
            for paper in sorted(picked, key=lambda p: -(p.upvotes or 0)):
                topic = paper.topics[0].topic if paper.topics else OTHER
                groups.setdefault(topic, []).append(paper)
            sections = [(t, labels.get(t, "Other papers"), ps) for t, ps in groups.items()]
            issue = issue_of(sections, email=email, day=day, issue_id=i + 1)
            issue = Issue(subscriber=subscriber, date=day, sections=issue.sections, top_pick=issue.top_pick, id=i + 1)
        else:
            base = issues_by_prefs.get((chosen, limit))
            if base is None:
                base = issues_by_prefs[(chosen, limit)] = sample_issue(papers, subscriber, day, settings)
            issue = Issue(subscriber=subscriber, date=day, sections=base.sections, top_pick=base.top_pick,
                          id=i + 1)
        jobs.append(RenderJob(issue, sample_links(settings, email, day.isoformat(), i + 1)))
    return jobs


def make_papers(n: int, path: Path = PAPERS_FILE) -> list[Paper]:
    """``n`` papers, untagged: the recorded ones first, then new pairs of their titles and abstracts."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise UsageError(f"digest bench needs a checkout of the repository: cannot read {path}: "
                         f"{err.strerror or err}") from err
    rows = [json.loads(line) for line in lines]
    papers = []
    for k in range(n):
        row, other = rows[k % len(rows)], rows[(k * 7 + k // len(rows)) % len(rows)]
        fresh = k < len(rows)
        papers.append(Paper(
            id=row["id"] if fresh else f"2699.{k:05d}",
            title=row["title"] if fresh else f"{row['title']} ({k // len(rows) + 1})",
            abstract=(row.get("abstract") or "") if fresh else (other.get("abstract") or ""),
            authors=tuple(row.get("authors") or ()), upvotes=row.get("upvotes"),
            ai_summary=row.get("ai_summary") if fresh else other.get("ai_summary"),
            code_url=row.get("code_url"), project_url=row.get("project_url"), pdf_url=row.get("pdf_url"),
            categories=tuple(row.get("categories") or ()), sources=("bench",),
            first_seen=NOW - timedelta(minutes=10 + (k * 37) % (48 * 60)),
        ))
    return papers


def make_subscriber(i: int, topics: Sequence[str], authors: Sequence[str], seed: int = SEED) -> Subscriber:
    """Reader number ``i`` of the workload (the same for a given seed, whoever asks)."""
    rng = random.Random(seed * 1_000_003 + i)
    r = rng.random()
    chosen: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    followed: tuple[str, ...] = ()
    if r < 0.30:
        pass  # follows everything
    elif r < 0.70:
        chosen = tuple(rng.sample(list(topics), rng.randint(1, min(3, len(topics)))))
    elif r < 0.85:
        chosen = tuple(rng.sample(list(topics), rng.randint(1, min(2, len(topics)))))
        keywords = tuple(rng.sample(KEYWORDS, rng.randint(1, 2)))
    elif r < 0.95:
        keywords = tuple(rng.sample(KEYWORDS, rng.randint(1, 3)))
    else:
        followed = tuple(rng.sample(list(authors), min(len(authors), rng.randint(1, 2))))
        chosen = tuple(rng.sample(list(topics), 1)) if topics else ()
    exclude: tuple[str, ...] = (rng.choice(KEYWORDS),) if rng.random() < 0.1 else ()
    exclude = tuple(word for word in exclude if word not in keywords)
    return Subscriber(
        email=f"reader{i}@example.org", name=f"Reader {i}", topics=chosen, keywords=keywords, exclude=exclude,
        authors=followed, max_papers=rng.choice((5, 10, 20, 20)), tz=rng.choice(TIME_ZONES),
    )


def make_subscribers(n: int, topics: Sequence[str], authors: Sequence[str], start: int = 0,
                     seed: int = SEED) -> Iterator[Subscriber]:
    for i in range(start, n):
        yield make_subscriber(i, topics, authors, seed)


def authors_of(papers: Sequence[Paper]) -> list[str]:
    return sorted({a for p in papers[:300] for a in p.authors[:2]})


def bench_settings(settings: Settings, directory: Path, **sections: dict[str, Any]) -> Settings:
    """``settings`` with the database in ``directory`` (and ``sections`` merged over their tables)."""
    update: dict[str, Any] = {"database": settings.database.model_copy(
        update={"url": f"sqlite:///{directory / 'bench.sqlite3'}"})}
    for name, values in sections.items():
        update[name] = getattr(settings, name).model_copy(update=values)
    return settings.model_copy(update=update)


def prepare_store(settings: Settings, n_papers: int, subscribers: Iterator[Subscriber]) -> tuple[Store, int]:
    """A fresh database holding the workload: papers (tagged) and readers (confirmed)."""
    store = Store(settings.database.url)
    papers = make_papers(n_papers)
    store.upsert_papers(papers, now=NOW)
    Pipeline(settings, store, clock=lambda: NOW).tag_pending()
    count = 0
    batch: list[Subscriber] = []
    for sub in subscribers:
        batch.append(sub)
        if len(batch) >= 5000:
            count += store.add_subscribers(batch, now=NOW)
            batch = []
    count += store.add_subscribers(batch, now=NOW)
    return store, count


def tagged_papers(settings: Settings, n_papers: int) -> list[Paper]:
    tagger = Tagger(settings.enabled_topics)
    return [tagger.tag_paper(p) for p in make_papers(n_papers)]


def direct_first(renderer: Any) -> Any:
    """``renderer`` with a body's first reader always on the direct path (digest.assemble) and the body
    kept from its second reader on, whatever share of readers share bodies: the default keeps every
    body for a run's first few dozen readers and then decides by the share (see _SharedBodies)."""
    from digest.render import _SharedBodies

    renderer._shared = _SharedBodies(keep_share=2.0, warm_up=0)
    return renderer
