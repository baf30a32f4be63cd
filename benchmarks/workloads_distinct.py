"""Distinct readers: every reader gets a different set of 20 real papers (no two bodies alike).

The render part of ``digest bench`` lets many readers share bodies (readers who follow the same topics
get the same papers), which the fast path exploits. This workload shares nothing: reader ``i`` gets a
random subset of ``PAPERS_EACH`` papers out of the recorded Hugging Face papers
(tests/fixtures/render/papers.jsonl, tagged by the real tagger), no subset twice, grouped by topic as
selection groups them. Each email goes through the real path (``Pipeline.render_message``: links,
subject, HTML and text parts, MIME bytes) in fresh forked processes that start together: one process
alone, then two at once, in turns, ``ROUNDS`` times; the figures are the medians.

Run alone: ``.venv/bin/python benchmarks/workloads_distinct.py [--readers 2000] [--profile]``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: the checkout's package, not an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.suite import BenchError, _quiet, run_together
from digest.config import Settings
from digest.gcpause import frozen_heap
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from tests.samples import BENCH_DATE, NOW, SEED, tagged_papers

__all__ = ["DISTINCT_SAMPLE", "bench_distinct", "bench_distinct_fresh", "distinct_issues"]

REPO = Path(__file__).resolve().parent.parent

PAPERS_EACH = 20
RECORDED_PAPERS = 300  # the recorded HF papers in the fixture; beyond them make_papers pairs titles anew
DISTINCT_SAMPLE = 4000  # readers at most: enough for a few seconds of work per round
ROUNDS = 3
WARM_UP = 20
OTHER = "other"


def distinct_issues(papers: Sequence[Paper], labels: dict[str, str], count: int, seed: int = SEED,
                    first_id: int = 1) -> list[Issue]:
    """``count`` issues, each a different random subset of ``PAPERS_EACH`` of ``papers`` grouped by each
    paper's best topic (sections in the order of the topics, best score first, ``other`` last), the
    most upvoted paper as top pick; reader ids from ``first_id``."""
    rng = random.Random(seed)
    each = min(PAPERS_EACH, len(papers))
    seen: set[tuple[int, ...]] = set()
    order = {topic: k for k, topic in enumerate(labels)}
    issues = []
    while len(issues) < count:
        chosen = tuple(sorted(rng.sample(range(len(papers)), each)))
        if chosen in seen:
            if len(seen) > 1000 * count:  # a tiny pool cannot give that many distinct sets
                raise BenchError(f"only {len(seen)} distinct sets of {each} out of {len(papers)} papers")
            continue
        seen.add(chosen)
        groups: dict[str, list[IssueEntry]] = {}
        for k in chosen:
            paper = papers[k]
            best = max(paper.topics, key=lambda t: t.score, default=None)
            topic = best.topic if best is not None and best.topic in labels else OTHER
            reason = f"matches {', '.join(best.why[:2]) or labels[topic]}" if topic != OTHER and best else "popular"
            groups.setdefault(topic, []).append(IssueEntry(paper, reason, best.score if best else 0.0))
        sections = tuple(
            IssueSection(topic, labels.get(topic, "Other papers"),
                         tuple(sorted(entries, key=lambda e: -e.score)))
            for topic, entries in sorted(groups.items(), key=lambda item: order.get(item[0], len(order)))
        )
        entries = [e for s in sections for e in s.entries]
        top = max(entries, key=lambda e: (e.paper.upvotes or 0, e.score))
        n = first_id + len(issues)
        reader = Subscriber(email=f"distinct{n}@example.org", name=f"Reader {n}", max_papers=each, id=n)
        issues.append(Issue(subscriber=reader, date=BENCH_DATE, sections=sections, top_pick=top, id=n))
    return issues


@dataclass
class _Workload:
    pipeline: Pipeline
    jobs: list[tuple[Issue, str]]


# Set before forking: the workers inherit it instead of unpickling thousands of issues.
_WORK: _Workload | None = None


def _share(index: int, processes: int, barrier: Any, results: Any) -> None:
    try:
        assert _WORK is not None
        jobs = _WORK.jobs[index::processes]
        render = _WORK.pipeline.render_message
        with frozen_heap():  # as a send does (digest.gcpause)
            barrier.wait()
            start, cpu = time.perf_counter(), time.process_time()
            size = sum(len(render(issue, mid, NOW).data) for issue, mid in jobs)
            results.put({"emails": len(jobs), "start": start, "end": time.perf_counter(),
                         "cpu": time.process_time() - cpu, "bytes": size})
    except BaseException as err:  # the parent must hear of it, not wait for ever
        results.put({"error": f"{type(err).__name__}: {err}"})
        raise


def _round(processes: int) -> dict[str, float]:
    """Every job rendered by ``processes`` fresh forked processes from a common start: emails per second
    (wall clock, first start to last end) and per CPU second of the busier process."""
    shares = run_together(_share, [(k, processes) for k in range(processes)], "distinct-readers")
    emails = sum(s["emails"] for s in shares)
    span = max(s["end"] for s in shares) - min(s["start"] for s in shares)
    return {"per_s": emails / span, "per_s_cpu": emails / max(s["cpu"] for s in shares),
            "bytes": sum(s["bytes"] for s in shares), "emails": emails}


def bench_distinct_fresh(settings: Settings, n_subscribers: int, n_papers: int) -> dict[str, Any]:
    """``bench_distinct`` in a fresh interpreter, as a send's render process is one: forked from a
    process that has just run the other parts of ``digest bench``, with their heap and filled caches,
    the workers rendered about 15% slower (3,700-3,800 against 4,400-4,500 emails/s in one process)."""
    code = (f"import sys, json, pickle; sys.path.insert(0, {str(REPO)!r}); "
            "from benchmarks.workloads_distinct import bench_distinct; "
            "print(json.dumps(bench_distinct(pickle.loads(sys.stdin.buffer.read()), "
            f"{int(n_subscribers)}, {int(n_papers)})))")
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(settings), capture_output=True,
                          timeout=3600)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"distinct-readers benchmark failed: {tail[0]}")
    figures: dict[str, Any] = json.loads(done.stdout.decode("utf-8").strip().splitlines()[-1])
    return figures


def bench_distinct(settings: Settings, n_subscribers: int, n_papers: int, rounds: int = ROUNDS,
                   seed: int = SEED) -> dict[str, Any]:
    """The distinct-readers workload (see the module's docstring); ``distinct_per_s`` is the median of
    the two-process rounds."""
    if "fork" not in mp.get_all_start_methods():
        raise BenchError("the distinct-readers benchmark needs fork (Linux, macOS)")
    global _WORK
    count = min(n_subscribers, DISTINCT_SAMPLE)
    papers = tagged_papers(settings, max(PAPERS_EACH + 2, min(n_papers, RECORDED_PAPERS)))
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'distinct.sqlite3'}")
        pipeline = Pipeline(settings, store, clock=lambda: NOW)
        with _quiet():  # a fresh database makes its signing key, and says so
            pipeline.signing_key  # noqa: B018
        issues = distinct_issues(papers, pipeline.labels, count + WARM_UP, seed)
        warm, timed = issues[:WARM_UP], issues[WARM_UP:]
        jobs = [(issue, pipeline.message_id(issue.id or 0)) for issue in timed]
        # Templates compile and the signing key is read here, once, before the workers fork; the
        # warm-up readers are not among the timed ones.
        for issue in warm:
            pipeline.render_message(issue, pipeline.message_id(issue.id or 0), NOW)
        store.close()
        _WORK = _Workload(pipeline, jobs)
        try:
            ones, twos = [], []
            for k in range(rounds):
                # In turns, each first every other round: a drift in the machine's load weighs on both.
                order = (1, 2) if k % 2 == 0 else (2, 1)
                for processes in order:
                    (ones if processes == 1 else twos).append(_round(processes))
        finally:
            _WORK = None

    def median(rows: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(row[key] for row in rows), 1)

    return {
        "readers": len(jobs), "papers": len(papers), "papers_each": min(PAPERS_EACH, len(papers)),
        "rounds": rounds,
        "distinct_per_s_1": median(ones, "per_s"), "distinct_per_s_1_cpu": median(ones, "per_s_cpu"),
        "rounds_1": " ".join(f"{row['per_s']:.0f}" for row in ones),
        "distinct_per_s_2": median(twos, "per_s"), "distinct_per_s_2_cpu": median(twos, "per_s_cpu"),
        "rounds_2": " ".join(f"{row['per_s']:.0f}" for row in twos),
        "distinct_per_s": median(twos, "per_s"),
        "avg_message_kb": round(ones[0]["bytes"] / max(1, ones[0]["emails"]) / 1024, 1),
    }


LABELS = [
    ("readers", "readers, each a different set of papers"), ("papers", "recorded papers drawn from"),
    ("papers_each", "papers per reader"), ("rounds", "rounds (1 process, 2 at once, in turns)"),
    ("rounds_1", "1 process, each round, emails/s"),
    ("distinct_per_s_1", "1 process, emails/s (wall, median)"),
    ("distinct_per_s_1_cpu", "1 process, emails/s (CPU, median)"),
    ("rounds_2", "2 processes at once, each round, emails/s"),
    ("distinct_per_s_2", "2 processes at once, emails/s (wall, median)"),
    ("distinct_per_s_2_cpu", "2 processes at once, emails/s (CPU of the busier, median)"),
    ("avg_message_kb", "average message, KB"),
]


def _profile(settings: Settings, count: int) -> None:
    """cProfile of one process rendering ``count`` distinct readers (where the time goes)."""
    import cProfile
    import pstats

    papers = tagged_papers(settings, RECORDED_PAPERS)
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'distinct.sqlite3'}")
        pipeline = Pipeline(settings, store, clock=lambda: NOW)
        issues = distinct_issues(papers, pipeline.labels, count + WARM_UP)
        jobs = [(issue, pipeline.message_id(issue.id or 0)) for issue in issues]
        for issue, mid in jobs[:WARM_UP]:
            pipeline.render_message(issue, mid, NOW)
        profiler = cProfile.Profile()
        profiler.enable()
        for issue, mid in jobs[WARM_UP:]:
            pipeline.render_message(issue, mid, NOW)
        profiler.disable()
        store.close()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--papers", type=int, default=RECORDED_PAPERS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--profile", action="store_true", help="cProfile one process instead")
    args = parser.parse_args()
    settings = Settings()
    if args.profile:
        _profile(settings, args.readers)
        return
    figures = bench_distinct(settings, args.readers, args.papers, rounds=args.rounds)
    for key, label in LABELS:
        print(f"  {label:<58}  {figures[key]}")
    print(f"distinct_per_s={figures['distinct_per_s']}")


if __name__ == "__main__":
    main()
