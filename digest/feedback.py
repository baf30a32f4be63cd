"""Reader feedback: verdicts given from the CLI, from a mail's "More like this" / "Less like this"
page, or by importing a reader's library; the checks and messages both the CLI and the web share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from digest.errors import UsageError
from digest.library import LibraryEntry, read_library, resolve
from digest.models import Feedback, Subscriber, Verdict

if TYPE_CHECKING:
    from digest.store import Store

__all__ = ["ImportResult", "feedback_json", "give", "import_library", "parse_verdict", "reader"]


def parse_verdict(value: str) -> Verdict:
    try:
        return Verdict(value.strip().lower())
    except ValueError as err:
        raise UsageError(f"invalid verdict {value!r}: expected 'more' or 'less'") from err


def reader(store: Store, email: str) -> Subscriber:
    """The subscriber with this address; UsageError if there is none."""
    sub = store.get_subscriber(email.strip().lower())
    if sub is None or sub.id is None:
        raise UsageError(f"no subscriber {email.strip()}")
    return sub


def give(store: Store, sub: Subscriber, paper_id: str, verdict: Verdict, now: datetime) -> bool:
    """Record ``verdict`` on a stored paper (replacing an earlier one); whether anything changed."""
    assert sub.id is not None
    if not store.paper_ids_known([paper_id]):
        raise UsageError(f"no paper {paper_id} in the store (see `digest preview` or the archive for ids)")
    return store.set_feedback(sub.id, [(paper_id, verdict)], now) > 0


@dataclass(frozen=True, slots=True)
class ImportResult:
    entries: int
    used: int  # stored papers the library names, each now a "more"
    changed: int  # of those, how many were not a "more" already
    not_found: tuple[LibraryEntry, ...]

    @property
    def line(self) -> str:
        return f"used={self.used} not_found={len(self.not_found)} entries={self.entries}"


def import_library(store: Store, sub: Subscriber, data: bytes, name: str, now: datetime) -> ImportResult:
    """Every stored paper the library names counts as "more" (a "less" on it is replaced: the reader
    keeps it in their own library); UsageError if the file is no library."""
    assert sub.id is not None
    entries = read_library(data, name)
    found = resolve(store, entries)
    changed = store.set_feedback(sub.id, [(pid, Verdict.MORE) for pid in found.paper_ids], now)
    return ImportResult(len(entries), len(found.paper_ids), changed, found.not_found)


def feedback_json(item: Feedback) -> dict[str, str]:
    return {"paper_id": item.paper_id, "verdict": item.verdict.value, "at": item.at.isoformat()}
