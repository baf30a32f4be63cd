"""`digest feedback add|clear|list|import` as a script sees them: output, --json lines, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.models import Paper, Subscriber
from digest.store import Store
from tests.conftest import NOW
from tests.integration.test_cli_errors import _cli, _one_error, _write_config


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _write_config(tmp_path, f"sqlite:///{tmp_path / 'd.sqlite3'}")
    store = Store(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    store.upsert_papers([
        Paper(id="2401.00001", title="Tool-using LLM agents that plan", abstract="Agents."),
        Paper(id="2401.00002", title="Sparse pruning of transformers", abstract="Pruning."),
        Paper(id="2401.00003", title="A diffusion model for video", abstract="Diffusion."),
    ], NOW)
    store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    store.close()
    return tmp_path


def _lines(proc_out: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in proc_out.splitlines()]


def test_add_list_replace_clear(home: Path) -> None:
    assert _cli(home, "feedback", "add", "ada@example.org", "2401.00001", "more").returncode == 0
    assert _cli(home, "feedback", "add", "Ada@Example.org", "2401.00002", "less").returncode == 0
    again = _cli(home, "feedback", "add", "ada@example.org", "2401.00002", "less")
    assert again.returncode == 0 and again.stdout.startswith("unchanged")
    listed = _lines(_cli(home, "feedback", "list", "ada@example.org", "--json").stdout)
    assert [(x["paper_id"], x["verdict"]) for x in listed] == [("2401.00001", "more"), ("2401.00002", "less")]
    assert set(listed[0]) == {"paper_id", "verdict", "at"}
    _cli(home, "feedback", "add", "ada@example.org", "2401.00002", "more")  # a later verdict replaces
    listed = _lines(_cli(home, "feedback", "list", "ada@example.org", "--json").stdout)
    assert [(x["paper_id"], x["verdict"]) for x in listed] == [("2401.00001", "more"), ("2401.00002", "more")]
    assert _cli(home, "feedback", "clear", "ada@example.org", "2401.00001").stdout.strip() == "cleared=1"
    assert _cli(home, "feedback", "clear", "ada@example.org").stdout.strip() == "cleared=1"
    assert _cli(home, "feedback", "list", "ada@example.org", "--json").stdout == ""


def test_bad_input_is_one_line_and_exit_2(home: Path) -> None:
    _one_error(_cli(home, "feedback", "add", "nobody@example.org", "2401.00001", "more"), 2, "no subscriber")
    _one_error(_cli(home, "feedback", "add", "ada@example.org", "2499.99999", "more"), 2, "no paper 2499.99999")
    _one_error(_cli(home, "feedback", "add", "ada@example.org", "2401.00001", "maybe"), 2, "more", "less")
    _one_error(_cli(home, "feedback", "list", "nobody@example.org"), 2, "no subscriber")
    _one_error(_cli(home, "feedback", "clear", "nobody@example.org"), 2, "no subscriber")
    _one_error(_cli(home, "feedback", "import", "ada@example.org", "missing.bib"), 2, "cannot read missing.bib")
    (home / "junk.txt").write_text("hello\n")
    _one_error(_cli(home, "feedback", "import", "ada@example.org", "junk.txt"), 2, "junk.txt:1")


BIBTEX = r"""
@article{agents2024,
  title = {Tool-using {LLM} Agents that Plan},
  author = {Doe, Jane},
  journal = {arXiv preprint arXiv:2401.00001},
  year = {2024}
}
@inproceedings{byTitle,
  title = {Sparse Pruning of Transformers},
  booktitle = {Proc. Somewhere},
  doi = {10.1145/3580305.3599572}
}
@misc{elsewhere, title = {A paper this store never saw}, eprint = {2312.99999}, archivePrefix = {arXiv}}
"""

RIS = """TY  - JOUR
TI  - Something else entirely
UR  - https://arxiv.org/pdf/2401.00003v2.pdf
ER  -
"""


def test_import_bibtex_ris_and_plain_lists(home: Path) -> None:
    (home / "lib.bib").write_text(BIBTEX)
    proc = _cli(home, "feedback", "import", "ada@example.org", "lib.bib")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "used=2 not_found=1 entries=3"  # by arXiv id, by title; one unknown
    assert "2312.99999" in proc.stderr
    (home / "lib.ris").write_text(RIS)
    assert _cli(home, "feedback", "import", "ada@example.org", "lib.ris").stdout.splitlines()[-1] == (
        "used=1 not_found=0 entries=1")
    listed = _lines(_cli(home, "feedback", "list", "ada@example.org", "--json").stdout)
    assert sorted(x["paper_id"] for x in listed) == ["2401.00001", "2401.00002", "2401.00003"]
    assert {x["verdict"] for x in listed} == {"more"}
    plain = "# my reading list\nhttps://huggingface.co/papers/2401.00002\n2401.00001v3\n"
    proc = _cli(home, "feedback", "import", "ada@example.org", "-", stdin=plain.encode())
    assert proc.stdout.splitlines()[-1] == "used=2 not_found=0 entries=2"
