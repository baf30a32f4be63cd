"""Rendering benchmark: full emails (HTML + text + MIME bytes) per second, fast path against naive path.

    .venv/bin/python benchmarks/bench_render.py [--subscribers 10000] [--processes 2] [--naive-sample 100]

10,000 subscribers with mixed preferences over 300 recorded papers (tests/fixtures/render/papers.jsonl):
half follow topics only (so readers with the same choice get the same papers), half have an issue of
their own (``--personal-share``). The fast path renders every email; the naive path (Jinja -> MJML ->
premailer per email) a sample. Prints key=value lines.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from digest.bench_render import default_processes, load_papers, make_jobs, measure_render  # noqa: E402
from digest.config import Settings  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "render" / "papers.jsonl"


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
