"""Rendering benchmark: full emails (HTML + text + MIME bytes) per second, fast path against naive path.

    .venv/bin/python benchmarks/bench_render.py [--subscribers 10000] [--processes 2] [--naive-sample 100]

10,000 subscribers with mixed preferences over 300 recorded papers (tests/fixtures/render/papers.jsonl):
half follow topics only (so readers with the same choice get the same papers), half have an issue of
their own (``--personal-share``). The fast path renders every email; the naive path (Jinja -> MJML ->
premailer per email) a sample. Prints key=value lines.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from digest.config import Settings  # noqa: E402
from digest.message import build_message, list_id_for, make_message_id  # noqa: E402
from digest.models import Paper  # noqa: E402
from digest.render import Renderer  # noqa: E402
from tests.samples import RenderJob, load_papers, make_jobs, sample_key  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "render" / "papers.jsonl"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=default_processes())
    parser.add_argument("--naive-sample", type=int, default=100)
    parser.add_argument("--personal-share", type=float, default=0.5,
                        help="fraction of readers whose issue is theirs alone (default 0.5)")
    args = parser.parse_args()
    settings = Settings()
    papers = load_papers(FIXTURE, settings)
    jobs = make_jobs(papers, settings, args.subscribers, date(2026, 11, 27), personal_share=args.personal_share)
    print(f"papers={len(papers)} subscribers={len(jobs)} distinct_issues={len({j.issue.paper_ids for j in jobs})}")
    figures = measure_render(settings, jobs, naive_sample=args.naive_sample, processes=args.processes)
    for key, value in figures.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
