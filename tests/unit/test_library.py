"""Reading a reader's library: which arXiv id each entry names (never one inside a DOI), BibTeX, RIS and
plain lists told apart by content, and one clear error for anything else."""

from __future__ import annotations

import pytest

from digest.errors import UsageError
from digest.library import MAX_LIBRARY_BYTES, LibraryEntry, arxiv_id_in, read_library


@pytest.mark.parametrize(("text", "bare", "found"), [
    ("2401.01234", True, "2401.01234"),
    ("2401.01234v3", True, "2401.01234"),
    ("hep-th/9901001", True, "hep-th/9901001"),
    ("https://arxiv.org/abs/2401.01234v2", False, "2401.01234"),
    ("https://arxiv.org/pdf/2401.01234.pdf", False, "2401.01234"),
    ("http://export.arxiv.org/abs/math.GT/0309136", False, "math.GT/0309136"),
    ("https://huggingface.co/papers/2608.19880", False, "2608.19880"),
    ("10.48550/arXiv.2401.01234", False, "2401.01234"),
    ("arXiv preprint arXiv:2401.01234", False, "2401.01234"),
    ("10.1145/3580305.3599572", False, None),  # a DOI's digits are no arXiv id
    ("Proceedings 2023, pages 1234.5678", False, None),
    ("", True, None),
])
def test_arxiv_ids_where_an_entry_names_one(text: str, bare: bool, found: str | None) -> None:
    assert arxiv_id_in(text, bare=bare) == found


def test_bibtex_with_braces_latex_and_an_eprint() -> None:
    entries = read_library(rb"""
@inproceedings{x, title = {{LLM} Agents for \textit{Tool} Use}, eprint = {2401.00001}, archivePrefix = {arXiv}}
@article{y, title = "Only a title", doi = {10.1145/3580305.3599572}}
@misc{z, title = {Not arXiv}, eprint = {hal-01234}, archivePrefix = {HAL}}
""")
    assert entries == [LibraryEntry("2401.00001", "LLM Agents for Tool Use"), LibraryEntry(None, "Only a title"),
                       LibraryEntry(None, "Not arXiv")]


def test_ris_and_plain_lists() -> None:
    ris = b"TY  - JOUR\nT1  - A title\nUR  - https://arxiv.org/abs/2401.00002\nER  -\n"
    assert read_library(ris) == [LibraryEntry("2401.00002", "A title")]
    plain = b"\xef\xbb\xbf# comment\n2401.00003\n\nhttps://arxiv.org/abs/2401.00004v1\n"
    assert [e.arxiv_id for e in read_library(plain)] == ["2401.00003", "2401.00004"]


def test_what_is_no_library_is_one_clear_error() -> None:
    with pytest.raises(UsageError, match=r"lib\.txt:2: not an arXiv id or URL"):
        read_library(b"2401.00003\nhello world\n", "lib.txt")
    with pytest.raises(UsageError, match="no papers found"):
        read_library(b"\n\n# nothing\n", "empty.txt")
    with pytest.raises(UsageError, match="larger than"):
        read_library(b"%" * (MAX_LIBRARY_BYTES + 1), "big.bib")
