"""The rendering benchmark and its sample data: issues for many subscribers, emails/s fast and naive."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from digest.config import Settings
from digest.links import LinkBuilder, PersonalLinks, Signer
from digest.message import build_message, list_id_for, make_message_id
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.render import Renderer
from digest.tagger import Tagger

__all__ = ["RenderJob", "issue_of", "load_papers", "make_jobs", "measure_render", "render_figures", "sample_issue",
           "sample_links"]

OTHER = "other"


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


def _full_email(renderer: Renderer, job: RenderJob, naive: bool, now: datetime, list_id: str,
                domain: str, secret: str) -> bytes:
    render = renderer.mime_naive if naive else renderer.mime
    rendered = render(job.issue, job.links)
    return build_message(
        rendered, sender=renderer.settings.site.sender, recipient=job.issue.subscriber.email,
        message_id=make_message_id(job.issue.id or 0, domain),
        date=now, list_id=list_id, links=job.links,
    )


# What pool workers render: set before the pool forks, so they inherit it instead of unpickling issues
# (in a real send each worker loads its own share of subscribers).
_POOL: tuple[Renderer, Sequence[RenderJob], datetime, str, str, str] | None = None


def _pool_batch(bounds: tuple[int, int]) -> int:
    assert _POOL is not None
    renderer, jobs, now, list_id, domain, secret = _POOL
    return sum(len(_full_email(renderer, j, False, now, list_id, domain, secret)) for j in jobs[bounds[0]:bounds[1]])


def _pool_rate(renderer: Renderer, jobs: Sequence[RenderJob], processes: int, now: datetime, list_id: str,
               domain: str, secret: str) -> float:
    """Emails per second over ``processes`` forked workers; 0.0 where fork is unavailable."""
    global _POOL
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0.0
    _POOL = (renderer, jobs, now, list_id, domain, secret)
    try:
        chunk = max(1, len(jobs) // (processes * 8))
        bounds = [(i, min(len(jobs), i + chunk)) for i in range(0, len(jobs), chunk)]
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            list(pool.map(_pool_batch, [(0, 1)] * processes))  # start the workers
            start = time.perf_counter()
            list(pool.map(_pool_batch, bounds))
            return len(jobs) / (time.perf_counter() - start)
    finally:
        _POOL = None


def _timed(fn: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure_render(settings: Settings, jobs: Sequence[RenderJob], *, naive_sample: int = 100,
                   processes: int = 1, renderer: Renderer | None = None) -> dict[str, Any]:
    """Time full emails (render + MIME bytes) on the fast path over all ``jobs`` and on the naive path
    over the first ``naive_sample``; with ``processes`` > 1 the fast path also runs in a process pool.

    Figures (emails per second): ``render_per_s`` (fast, the better of one process and the pool, wall
    clock), ``render_per_s_1core`` and ``render_per_s_1core_cpu`` (one process, by wall clock and by its
    CPU time, which other load on the machine disturbs less), ``render_per_s_pool``, ``naive_per_s`` and
    ``naive_per_s_cpu``, and ``render_speedup`` (one process fast / naive, by CPU time). Sizes in bytes:
    ``avg_html_bytes``, ``max_html_bytes``, ``avg_message_bytes``.
    """
    renderer = renderer or Renderer(settings)
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    list_id = list_id_for(settings)
    domain = settings.site.sender.rpartition("@")[2].strip(">") or "localhost"
    secret = sample_key(settings)

    def fast(batch: Sequence[RenderJob]) -> list[bytes]:
        return [_full_email(renderer, job, False, now, list_id, domain, secret) for job in batch]

    def naive(batch: Sequence[RenderJob]) -> list[bytes]:
        return [_full_email(renderer, job, True, now, list_id, domain, secret) for job in batch]

    # Warm the caches (paper views, LaTeX, card fragments) as the first emails of a real send do.
    fast(jobs[:50])
    messages, fast_wall, fast_cpu = _timed(lambda: fast(jobs))
    sample = list(jobs[:naive_sample])
    _, naive_wall, naive_cpu = _timed(lambda: naive(sample))
    html_sizes = [len(renderer.render(j.issue, j.links).html.encode()) for j in jobs[:200]]

    pooled = 0.0
    if processes > 1:
        # A fresh renderer: the one above has seen every body once, which a real send never has.
        fresh = Renderer(settings, renderer.templates_dir, renderer.html_budget, renderer.share_bodies)
        for job in jobs[:50]:
            _full_email(fresh, job, False, now, list_id, domain, secret)
        pooled = _pool_rate(fresh, jobs, processes, now, list_id, domain, secret)

    def rate(count: int, seconds: float) -> float:
        return round(count / seconds, 1) if seconds > 0 else 0.0

    one_core, one_core_cpu = rate(len(jobs), fast_wall), rate(len(jobs), fast_cpu)
    naive_rate, naive_rate_cpu = rate(len(sample), naive_wall), rate(len(sample), naive_cpu)
    return {
        "emails": len(jobs),
        "render_per_s": max(one_core, round(pooled, 1)),
        "render_per_s_1core": one_core,
        "render_per_s_1core_cpu": one_core_cpu,
        "render_per_s_pool": round(pooled, 1),
        "processes": processes,
        "naive_per_s": naive_rate,
        "naive_per_s_cpu": naive_rate_cpu,
        "render_speedup": round(one_core_cpu / naive_rate_cpu, 1) if naive_rate_cpu else None,
        "avg_html_bytes": round(sum(html_sizes) / len(html_sizes)) if html_sizes else 0,
        "max_html_bytes": max(html_sizes, default=0),
        "avg_message_bytes": round(sum(len(m) for m in messages) / len(messages)) if messages else 0,
    }


def render_figures(settings: Settings, papers: Sequence[Paper], subscribers: int = 10_000, *,
                   processes: int | None = None, naive_sample: int = 100,
                   personal_share: float = 0.5) -> dict[str, Any]:
    """What ``digest bench`` prints for rendering: ``subscribers`` readers with mixed preferences over
    ``papers`` (tagged or not), timed by ``measure_render``; adds ``papers`` and ``distinct_issues``."""
    jobs = make_jobs(papers, settings, subscribers, date(2026, 11, 27), personal_share=personal_share)
    figures = measure_render(settings, jobs, naive_sample=naive_sample,
                             processes=default_processes() if processes is None else processes)
    return {"papers": len(papers), "distinct_issues": len({j.issue.paper_ids for j in jobs}), **figures}


def default_processes() -> int:
    return max(1, min(2, os.cpu_count() or 1))
