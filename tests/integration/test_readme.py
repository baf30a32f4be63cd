"""The README is executable: its commands run, in order, in a fresh copy of the project, offline,
and print what the README shows.

Conventions (README.md says so under "Try it on real days, offline"):

- The Quickstart's ``sh`` block must be exactly the two commands below. ``make demo`` is run (with
  the venv these tests run in, so nothing is installed); ``make test`` is not (it runs this test).
- Every ``console`` block is run: a line ``$ command`` is a shell command (a line ending in ``\\``
  continues on the next), the lines after it up to the next ``$`` are what it prints on stdout.
  ``...`` alone on a line stands for any number of lines, and ``...`` inside a line for any text
  (dates, paths, signed links). A command must exit 0; its stderr (logs, hints) is not compared.
- Other blocks (``sh``, ``toml``, plain) are not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent

QUICKSTART = """\
make demo   # fetch the embedded seed listing, tag it, and write one email per demo subscriber to var/outbox/
make test   # lint and run the whole test suite
"""

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Step:
    command: str
    expected: list[str]
    line: int  # in README.md, for the failure message


def blocks(text: str, lang: str) -> list[tuple[int, str]]:
    """(line number of the first body line, body) of every fenced block of ``lang``, in order."""
    return [(text.count("\n", 0, m.start("body")) + 1, m.group("body"))
            for m in _FENCE.finditer(text) if m.group("lang") == lang]


def steps(text: str) -> list[Step]:
    """The commands of every ``console`` block with the output shown under each."""
    found: list[Step] = []
    for first, body in blocks(text, "console"):
        command: list[str] = []
        expected: list[str] = []
        start = first
        continued = False
        for offset, line in enumerate(body.splitlines()):
            if continued:
                command.append(line)
                continued = line.endswith("\\")
            elif line.startswith("$ "):
                if command:
                    found.append(Step("\n".join(command), expected, start))
                command, expected, start = [line[2:]], [], first + offset
                continued = line.endswith("\\")
            elif command:
                expected.append(line)
            else:
                raise AssertionError(f"README.md:{first + offset}: output before any '$ ' command: {line!r}")
        if command:
            found.append(Step("\n".join(command), expected, start))
    return found


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*".join(re.escape(piece) for piece in line.rstrip().split("...")) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], stdout: str) -> bool:
    actual = "".join(line.rstrip() + "\n" for line in stdout.splitlines())
    return output_pattern(expected).fullmatch(actual) is not None


# ---- the conventions themselves -----------------------------------------------------------------


def test_steps_and_placeholders_are_read_as_documented() -> None:
    text = ("intro\n```console\n$ a --x \\\n    --y\none\n...\nlast ... line\n$ b\n```\n"
            "```sh\n$ not run\n```\n")
    assert steps(text) == [Step("a --x \\\n    --y", ["one", "...", "last ... line"], 3), Step("b", [], 8)]
    pattern = ["one", "...", "last ... line"]
    assert matches(pattern, "one\nlast 2026-12-05 line\n")
    assert matches(pattern, "one\nx\ny\nlast  line  \n")
    assert not matches(pattern, "one\nlast line\nextra\n")
    assert not matches(pattern, "two\nlast x line\n")
    assert matches([], "") and not matches([], "something\n")


# ---- the README ---------------------------------------------------------------------------------


def test_the_quickstart_is_exactly_make_demo_and_make_test() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    assert [body for _, body in blocks(section, "sh")] == [QUICKSTART]


def _fresh_copy(target: Path) -> Path:
    """The project's files as a clone would have them (tracked and new, not ignored; no var/, no venv)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith(("var/", ".venv/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs make, git and a git checkout")
def test_every_readme_command_runs_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    folder = _fresh_copy(tmp_path / "digest")
    env = {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "VIRTUAL_ENV": str(VENV)}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]

    # Quickstart: `make demo` with this venv, marked up to date so that nothing is installed (offline).
    stamp = subprocess.run(["cksum", "pyproject.toml"], cwd=folder, capture_output=True, text=True, check=True)
    installed = VENV / f".installed-{stamp.stdout.split()[0]}"
    demo = subprocess.run(["make", "-o", str(installed), "demo", f"VENV={VENV}"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, f"make demo exited {demo.returncode}:\n{demo.stdout}\n{demo.stderr}"
    assert demo.stdout.splitlines()[-1] == "sent=3 skipped=0 failed=0", demo.stdout  # as the README says

    found = steps(text)
    assert len(found) >= 5, "the README should show its commands in console blocks"
    for step in found:
        proc = subprocess.run(["bash", "-c", step.command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=300)
        where = f"README.md:{step.line}: $ {step.command}"
        assert proc.returncode == 0, f"{where}\nexited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert matches(step.expected, proc.stdout), (
            f"{where}\nREADME shows:\n" + "\n".join(step.expected) + f"\nprinted:\n{proc.stdout}")
