"""Tagger benchmark: start-up time and papers tagged per second on recorded papers from the repository.

Two corpora, both under tests/fixtures so the benchmark runs anywhere the repository is checked out:
- ``labelled``: the seed and dev label files (nearly every paper on a topic: the slow case, since
  papers without topic words are ruled out before any regular expression runs);
- ``listing``: every paper of the recorded Hugging Face daily listings (an ordinary day's mix).

Usage: python benchmarks/bench_tagger.py [--seconds S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digest.tagger import Tagger
from digest.tagger_eval import load_labelled, measure_startup_seconds, measure_tag_rate
from digest.topics import default_topics

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def labelled_corpus() -> list[tuple[str, str]]:
    papers = []
    for name in ("seed_topics.jsonl", "dev_topics.jsonl"):
        papers += load_labelled(FIXTURES / "labels" / name)
    return [(p.title, p.abstract) for p in papers]


def listing_corpus() -> list[tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}
    for path in sorted((FIXTURES / "sources" / "hf_daily_papers").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8")):
            paper = entry.get("paper", entry)
            seen.setdefault(paper["id"], (paper.get("title") or entry.get("title") or "",
                                          paper.get("summary") or entry.get("summary") or ""))
    return list(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per corpus (default 2)")
    args = parser.parse_args()
    wall, cpu = measure_startup_seconds()
    print(f"tagger_startup wall_seconds={wall:.3f} cpu_seconds={cpu:.3f}")
    tagger = Tagger(default_topics())
    for name, corpus in (("labelled", labelled_corpus()), ("listing", listing_corpus())):
        rate = measure_tag_rate(tagger, corpus, seconds=args.seconds)
        print(f"tagger_rate corpus={name} papers={len(corpus)} papers_per_cpu_second={rate:.0f}")


if __name__ == "__main__":
    main()
