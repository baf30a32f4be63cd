"""Start-up benchmark: CPU seconds (user + sys of the child process) of short `digest` commands.

    .venv/bin/python benchmarks/bench_startup.py [--runs 7] [--readers 3]

Makes a database in a temporary folder with ``digest run`` (the demo: seed listing, demo readers,
issues written to a file outbox), then runs each command ``--runs`` times as a new process, the
way a user does (the installed ``digest`` entry point, no warm interpreter), and reads the child's
CPU time from ``os.wait4``: wall time on a shared machine says more about the neighbours than about
the code. Prints one key=value line per command: median and range over the runs, e.g.

    help_cpu_s=0.21 range=0.19-0.25 runs=7

Commands: ``digest --help``, ``digest subscribers list``, ``digest status``. The ``-X importtime`` of
one ``subscribers list`` is summarised too (the slowest imported packages, cumulative), which says
where the rest of the time goes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIGEST = Path(sys.executable).with_name("digest")

COMMANDS = {
    "help": ["--help"],
    "subscribers_list": ["subscribers", "list"],
    "status": ["status"],
}


def cpu_seconds(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """user + sys CPU seconds of one run of ``argv`` (its children included: os.wait4 reports the child)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"error: {' '.join(argv)} exited {proc.returncode}: {err.strip()[:300]}")
    if proc.stderr:
        proc.stderr.close()
    return usage.ru_utime + usage.ru_stime


def import_profile(argv: list[str], cwd: Path, env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """The top-level packages with the largest cumulative import time (seconds) in one run."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; from digest.cli import cli; sys.exit(cli.main(sys.argv[1:]))",
                           *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    line = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)")
    totals: dict[str, float] = {}
    for match in line.finditer(done.stderr):
        cumulative, indent, name = int(match[1]), len(match[2]), match[3]
        if indent == 1:  # imported by the program itself, not by another module
            totals[name] = totals.get(name, 0.0) + cumulative / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not DIGEST.exists():
        sys.exit(f"error: no {DIGEST} (run `make lint` or install the package first)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
        env["DIGEST_SECRET_KEY"] = "bench-startup"
        subprocess.run([str(DIGEST), "run"], cwd=folder, env=env, check=True, capture_output=True)
        for name, argv in COMMANDS.items():
            cpu_seconds([str(DIGEST), *argv], folder, env)  # warm the page cache and .pyc files first
            runs = sorted(cpu_seconds([str(DIGEST), *argv], folder, env) for _ in range(args.runs))
            print(f"{name}_cpu_s={statistics.median(runs):.3f} range={runs[0]:.3f}-{runs[-1]:.3f} runs={len(runs)}")
        slowest = import_profile(COMMANDS["subscribers_list"], folder, env)
        print("subscribers_list_imports_s=" + ",".join(f"{name}:{seconds:.3f}" for name, seconds in slowest))


if __name__ == "__main__":
    main()
