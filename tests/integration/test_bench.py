"""`digest bench` runs end to end on a small workload and ends with its key=value figures (not timed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

KEYS = ("render_per_s", "render_speedup", "render_per_s_feedback", "send_ratio", "peak_rss_mb", "tag_per_s",
        "distinct_per_s", "mta_ratio", "first_delivery_s")


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return subprocess.run([sys.executable, "-m", "digest", "bench", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_bench_small_run_prints_every_figure_last(tmp_path: Path) -> None:
    done = run_bench(tmp_path, "--subscribers", "200", "--papers", "120")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = dict(line.split("=", 1) for line in lines[-len(KEYS):])
    assert tuple(figures) == KEYS
    values = {key: float(value) for key, value in figures.items()}
    assert all(value > 0 for value in values.values()), values
    assert 0 < values["send_ratio"] < 10 and values["peak_rss_mb"] < 4096
    assert 0 < values["mta_ratio"] < 10 and values["first_delivery_s"] < 600
    # The table comes first, one block per part, naming what was measured.
    table = "\n".join(lines[:-len(KEYS)])
    for part in ("render", "send", "memory", "tagger", "distinct", "mta"):
        assert f"\n{part} (" in f"\n{table}"
    assert "200 readers" in lines[0]
    # render_speedup: the real path at its best (one process or two at once) over the naive path, both
    # by CPU time; the per-core figure (one process each) is in the table.
    rows = {line.rsplit("  ", 1)[0].strip(): line.rsplit(" ", 1)[1] for line in lines if line.startswith("  ")}
    naive = float(rows["naive path, emails/s (CPU)"])
    best = max(float(rows["real path, 1 process, emails/s (CPU)"]),
               float(rows["real path, processes at once, emails/s (CPU of the busier, median)"]))
    assert values["render_speedup"] == pytest.approx(best / naive, rel=0.01, abs=0.1)
    per_core = float(rows["speed-up per core: 1 process each (CPU)"])
    assert 0 < per_core <= values["render_speedup"] + 0.1
    assert not list(tmp_path.iterdir())  # its databases lived in temporary folders, now gone
    assert (REPO / "tests" / "fixtures" / "render" / "papers.jsonl").exists()


def test_bench_runs_only_the_parts_asked_for(tmp_path: Path) -> None:
    done = run_bench(tmp_path, "--subscribers", "50", "--papers", "60", "--only", "tagger", "--only", "render")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("=")[0] for line in lines[-4:]] == ["render_per_s", "render_speedup", "render_per_s_feedback",
                                                            "tag_per_s"]
    assert "send (" not in done.stdout and "memory (" not in done.stdout


def test_bench_rejects_an_empty_workload(tmp_path: Path) -> None:
    done = run_bench(tmp_path, "--subscribers", "0")
    assert done.returncode == 2
    assert "at least 1" in done.stderr and "Traceback" not in done.stderr


def test_bench_distinct_and_mta_figures(tmp_path: Path) -> None:
    """The two workloads of issue 23 alone: every reader a different set of papers, and a send through
    the local MTA (a private Postfix where it can run, else the aiosmtpd sink) against a bare loop."""
    done = run_bench(tmp_path, "--subscribers", "120", "--papers", "60", "--only", "mta", "--only", "distinct")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = dict(line.split("=", 1) for line in lines[-3:])
    assert tuple(figures) == ("distinct_per_s", "mta_ratio", "first_delivery_s")
    values = {key: float(value) for key, value in figures.items()}
    assert values["distinct_per_s"] > 0
    assert 0 < values["mta_ratio"] < 10
    assert 0 < values["first_delivery_s"] < 600
    rows = {line.rsplit("  ", 1)[0].strip(): line.rsplit("  ", 1)[1].strip() for line in lines if line.startswith("  ")}
    assert rows["readers, each a different set of papers"] == "120"
    assert rows["papers per reader"] == "20"
    assert float(rows["1 process, emails/s (wall, median)"]) > 0
    assert float(rows["2 processes at once, emails/s (wall, median)"]) == values["distinct_per_s"]
    assert rows["MTA"].startswith(("Postfix", "aiosmtpd"))
    # Every reader of the mixed workload with something new got a message, and the bare loop sent them.
    assert 0 < int(rows["messages sent by digest send, each round"]) <= 120
    assert rows["messages in the bare loop"] == rows["messages sent by digest send, each round"]
    assert not list(tmp_path.iterdir())


def test_distinct_readers_never_share_a_set_of_papers() -> None:
    from benchmarks.workloads_distinct import PAPERS_EACH, distinct_issues
    from digest.compose import topic_labels
    from digest.config import Settings
    from tests.samples import tagged_papers

    settings = Settings()
    papers = tagged_papers(settings, 40)
    issues = distinct_issues(papers, topic_labels(settings), 500)
    sets = {frozenset(e.paper.id for e in issue.entries) for issue in issues}
    assert len(sets) == 500 and all(len(s) == PAPERS_EACH for s in sets)
    assert len({issue.subscriber.email for issue in issues}) == 500
    for issue in issues:
        assert issue.top_pick in issue.entries
        labels = [section.label for section in issue.sections]
        assert len(labels) == len(set(labels))  # one section per topic


def test_mta_workload_on_the_sink(tmp_path: Path) -> None:
    """The fallback where Postfix cannot run: the aiosmtpd sink, same figures."""
    script = REPO / "benchmarks" / "workloads_mta.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    done = subprocess.run([sys.executable, str(script), "--readers", "60", "--papers", "60", "--rounds", "1",
                           "--sink"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "aiosmtpd sink" in done.stdout
    figures = dict(line.split("=", 1) for line in lines[-2:])
    assert 0 < float(figures["mta_ratio"]) < 10 and 0 < float(figures["first_delivery_s"]) < 600
