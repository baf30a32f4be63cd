"""A reader's own library as a starting point for their taste: BibTeX, RIS, or a list of arXiv ids/URLs.

``read_library`` turns an export (Zotero, Mendeley, Google Scholar, a hand-made list) into entries (an
arXiv id where the entry names one, else its title); ``resolve`` finds the stored paper of each entry by
arXiv id first, then by normalised title (digest.sources.normalize.title_key, the store's own key).
Pure apart from ``resolve``'s two store lookups; nothing here touches the network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from digest.errors import UsageError
from digest.sources.normalize import clean_text, title_key

__all__ = ["LibraryEntry", "Resolved", "read_library", "resolve"]

# The largest library file read (a Zotero export of a few thousand papers is well under it).
MAX_LIBRARY_BYTES = 5 * 1024 * 1024
# An arXiv id standing alone (not part of a longer number, as in a DOI like 10.1145/3580305.3599572).
_NEW_ID = re.compile(r"(?<![\d.])(\d{4}\.\d{4,5})(?:v\d+)?(?![\d])")
_OLD_ID = re.compile(r"(?<![\w.\-])([a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?(?!\d)", re.IGNORECASE)
# Where a text names an arXiv paper: its abstract/PDF/HTML page, Hugging Face's page, arXiv's DOI,
# "arXiv:ID" (Google Scholar's "arXiv preprint arXiv:2401.01234").
_ARXIV_CONTEXT = re.compile(r"arxiv\.org/|huggingface\.co/papers/|10\.48550/arxiv\.|arxiv:\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LibraryEntry:
    """One paper of a library: its arXiv id if the entry names one, and its title if it has one."""

    arxiv_id: str | None
    title: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """The stored papers a library names (ids, in the library's order, once each) and what was not found."""

    paper_ids: tuple[str, ...]
    not_found: tuple[LibraryEntry, ...]


class PaperLookup(Protocol):
    def paper_ids_known(self, paper_ids: Sequence[str]) -> set[str]: ...

    def paper_ids_by_title_key(self, keys: Sequence[str]) -> dict[str, str]: ...


def arxiv_id_in(text: str, *, bare: bool = False) -> str | None:
    """The arXiv id ``text`` names: after an arXiv URL, DOI or ``arXiv:`` prefix, or (``bare``) the
    whole text being an id, as a plain list's line or a BibTeX ``eprint`` field is."""
    text = text.strip()
    if not text:
        return None
    if bare:
        found = _NEW_ID.fullmatch(text) or _OLD_ID.fullmatch(text)
        if found:
            return found.group(1)
    context = _ARXIV_CONTEXT.search(text)
    if context is None:
        return None
    rest = text[context.end():]
    found = _NEW_ID.match(rest) or _OLD_ID.match(rest)
    if found is None:  # arxiv.org/abs/ID, arxiv.org/pdf/ID.pdf: the id follows the path's first part
        found = _NEW_ID.search(rest[:80]) or _OLD_ID.search(rest[:80])
    return found.group(1) if found else None


def read_library(data: bytes, name: str = "library") -> list[LibraryEntry]:
    """The entries of a BibTeX or RIS export or a plain list (one arXiv id or URL per line, ``#``
    comments), told apart by content; UsageError (one line) for a file that is none of them."""
    if len(data) > MAX_LIBRARY_BYTES:
        raise UsageError(f"{name}: larger than {MAX_LIBRARY_BYTES // (1024 * 1024)} MB; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # older BibTeX exports; titles only need their ASCII letters
    if re.search(r"^\s*@\w+\s*[{(]", text, re.MULTILINE):
        entries = _bibtex(text, name)
    elif re.search(r"^TY  - ", text, re.MULTILINE):
        entries = _ris(text, name)
    else:
        entries = _plain(text, name)
    if not entries:
        raise UsageError(f"{name}: no papers found (expected BibTeX, RIS, or one arXiv id or URL per line)")
    return entries


def _bibtex(text: str, name: str) -> list[LibraryEntry]:
    from bibtexparser.entrypoint import parse_string

    try:
        library = parse_string(text)
    except Exception as err:  # the parser raises plain exceptions with its own message
        raise UsageError(f"{name}: not readable as BibTeX: {str(err).splitlines()[0] if str(err) else err}") from err
    entries = []
    for entry in library.entries:
        fields = {key.lower(): str(field.value) for key, field in entry.fields_dict.items()}
        prefix = fields.get("archiveprefix", "arxiv").lower()
        found = arxiv_id_in(fields["eprint"], bare=True) if "eprint" in fields and prefix == "arxiv" else None
        for key in ("url", "doi", "journal", "note", "howpublished", "booktitle"):
            if found is None and key in fields:
                found = arxiv_id_in(fields[key])
        entries.append(LibraryEntry(found, _bibtex_title(fields.get("title", ""))))
    return [e for e in entries if e.arxiv_id or e.title]


def _bibtex_title(value: str) -> str:
    # Braces protect capitals ({LLM}) and LaTeX escapes; neither matters for a normalised title.
    return clean_text(re.sub(r"\\[a-zA-Z]+\s*|[{}\\]", "", value))


def _ris(text: str, name: str) -> list[LibraryEntry]:
    import rispy

    try:
        records: list[dict[str, Any]] = rispy.loads(text)
    except Exception as err:
        raise UsageError(f"{name}: not readable as RIS: {str(err).splitlines()[0] if str(err) else err}") from err
    entries = []
    for record in records:
        found = None
        for key in ("urls", "doi", "journal_name", "secondary_title", "notes", "url"):
            values = record.get(key) or []
            for value in values if isinstance(values, list) else [values]:
                found = found or arxiv_id_in(str(value))
        title = clean_text(str(record.get("title") or record.get("primary_title") or ""))
        if found or title:
            entries.append(LibraryEntry(found, title))
    return entries


def _plain(text: str, name: str) -> list[LibraryEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = arxiv_id_in(line, bare=True)
        if found is None:
            raise UsageError(f"{name}:{number}: not an arXiv id or URL: {line[:80]!r} "
                             "(expected BibTeX, RIS, or one arXiv id or URL per line)")
        entries.append(LibraryEntry(found, ""))
    return entries


def resolve(store: PaperLookup, entries: Sequence[LibraryEntry]) -> Resolved:
    """The stored paper of each entry: by arXiv id, else by normalised title."""
    known = store.paper_ids_known([e.arxiv_id for e in entries if e.arxiv_id])
    keys = store.paper_ids_by_title_key([title_key(e.title) for e in entries
                                         if e.title and not (e.arxiv_id and e.arxiv_id in known)])
    found: dict[str, None] = {}
    missing = []
    for entry in entries:
        paper_id = entry.arxiv_id if entry.arxiv_id in known else None
        if paper_id is None and entry.title:
            paper_id = keys.get(title_key(entry.title))
        if paper_id is None:
            missing.append(entry)
        else:
            found[paper_id] = None
    return Resolved(tuple(found), tuple(missing))
