"""A built wheel carries everything the embedded demo needs: installed into a fresh venv, `digest run`
in an empty folder writes the demo issues (offline: the dependencies come from the test's own venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "digest", src / "digest", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], cwd=src)
    [built] = dist.glob("paper_digest-*.whl")
    return built


def test_wheel_holds_the_package_data_and_nothing_from_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("digest/templates/email.mjml", "digest/templates/email.txt", "digest/templates/email_card.txt",
                   "digest/templates/web/subscribe.html", "digest/templates/web/static/site.css",
                   "digest/defaults/topics.toml", "digest/defaults/hf_papers_search.txt",
                   "digest/defaults/demo_subscribers.csv", "digest/defaults/replay.toml",
                   "digest/defaults/replay/hf_daily/2026-08-18.json", "digest/defaults/replay/readers.csv",
                   "digest/store/migrations/env.py",
                   "digest/store/migrations/versions/0001_initial.py", "digest/py.typed"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/") or "/fixtures/" in n]
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_wheel_holds_exactly_the_package(wheel: Path) -> None:
    """Every file of digest/ in the checkout (modules and package data), and nothing else but the wheel's
    metadata: no benchmarks, no tests, no stray files."""
    names = {n for n in zipfile.ZipFile(wheel).namelist() if not n.startswith("paper_digest-")}
    package = {p.relative_to(REPO).as_posix() for p in (REPO / "digest").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert names == package
    assert not [n for n in names if "bench" in n.rpartition("/")[2]]


def test_installed_wheel_runs_the_demo_in_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    [site] = (venv / "lib").glob("python3*/site-packages")
    # The dependencies: this test venv's packages, after the venv's own (so the wheel's digest wins).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=tmp_path)
    where = _run([str(venv / "bin" / "python"), "-c", "import digest; print(digest.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout

    empty = tmp_path / "anywhere"
    empty.mkdir()
    proc = _run([str(venv / "bin" / "digest"), "run"], cwd=empty)
    assert "source=seed new=77 updated=0 errors=0" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "sent=3 skipped=0 failed=0"
    outbox = sorted(p.name.split("--")[0] for p in (empty / "var" / "outbox").glob("*.eml"))
    assert outbox == ["ada_example.org", "alan_example.org", "grace_example.org"]
    assert (empty / "var" / "digest.sqlite3").is_file()
    # `digest bench` needs a checkout (benchmarks/, tests/fixtures): an installed wheel says so, in one line.
    bench = subprocess.run([str(venv / "bin" / "digest"), "bench"], cwd=empty, capture_output=True, text=True,
                           timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(empty)})
    assert bench.returncode == 2, bench.stderr
    assert "checkout of the repository" in bench.stderr and "Traceback" not in bench.stderr
    assert len(bench.stderr.strip().splitlines()) == 1, bench.stderr
    # The README's "try it on real days": the replay config and the recorded days come from the wheel.
    replay = tmp_path / "elsewhere"
    replay.mkdir()
    fetched = _run([str(venv / "bin" / "digest"), "--config", "config/replay.toml", "fetch", "--date", "2026-08-18"],
                   cwd=replay)
    assert fetched.stdout == "source=hf_daily new=29 updated=0 errors=0\n"
    ran = _run([str(venv / "bin" / "digest"), "--config", "config/replay.toml", "run"], cwd=replay)
    assert ran.stdout.splitlines() == ["source=hf_daily new=15 updated=0 errors=0", "sent=3 skipped=1 failed=0"]
    assert len(list((replay / "var" / "replay-outbox").glob("*.eml"))) == 3
    # The web app's templates come from the wheel too.
    code = "from digest.web.templating import html_env; print(html_env().get_template('subscribe.html').filename)"
    page = _run([str(venv / "bin" / "python"), "-c", code], cwd=empty)
    assert page.stdout.strip().startswith(str(site))
