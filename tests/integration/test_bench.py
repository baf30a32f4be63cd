"""`digest bench` runs end to end on a small workload and ends with its key=value figures (not timed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

KEYS = ("render_per_s", "render_speedup", "render_per_s_feedback", "send_ratio", "peak_rss_mb", "tag_per_s")


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
    # The table comes first, one block per part, naming what was measured.
    table = "\n".join(lines[:-len(KEYS)])
    for part in ("render", "send", "memory", "tagger"):
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
