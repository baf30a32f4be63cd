"""Measuring the tagger: labelled files, per-topic precision/recall/F1, JSONL tagging and speed.

Macro-F1 is the mean F1 over every topic that is either enabled in the tagger or named in the labels,
except topics with nothing to measure on this file (no labelled paper and no prediction). A topic named
in the labels that the tagger does not know scores F1 = 0, so a typo in a label file cannot hide.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digest.errors import UsageError
from digest.models import Paper
from digest.tagger import Tagger

__all__ = [
    "EvalReport",
    "LabelledPaper",
    "Mistake",
    "TopicScore",
    "evaluate",
    "format_report",
    "load_labelled",
    "measure_startup_seconds",
    "measure_tag_rate",
    "parse_labelled_lines",
    "report_json",
    "tag_jsonl",
]


@dataclass(frozen=True, slots=True)
class LabelledPaper:
    """One line of a labelled file: a paper and the topics a human gave it."""

    id: str
    title: str
    abstract: str
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopicScore:
    """Confusion counts and scores of one topic; ``known`` is False for a topic the tagger lacks."""

    topic: str
    tp: int
    fp: int
    fn: int
    known: bool = True

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 0.0

    @property
    def measured(self) -> bool:
        return self.tp + self.fp + self.fn > 0


@dataclass(frozen=True, slots=True)
class Mistake:
    """A paper the tagger got wrong for one topic: ``kind`` is "fp" (tagged, not labelled) or "fn"."""

    id: str
    topic: str
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class EvalReport:
    """The outcome of ``evaluate``: per-topic scores (in topic order), macro-F1 and every mistake."""

    papers: int
    topics: tuple[TopicScore, ...]
    mistakes: tuple[Mistake, ...] = field(default=())

    @property
    def macro_f1(self) -> float:
        measured = [t.f1 for t in self.topics if t.measured]
        return sum(measured) / len(measured) if measured else 0.0


def _line_error(origin: str, lineno: int, message: str) -> UsageError:
    return UsageError(f"{origin}: line {lineno}: {message}")


def _parse_object(origin: str, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise _line_error(origin, lineno, f"not valid JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise _line_error(origin, lineno, "expected a JSON object")
    return obj


def _text_field(origin: str, lineno: int, obj: dict[str, Any], key: str, required: bool) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _line_error(origin, lineno, f"'{key}' must be a non-empty string" if required
                          else f"'{key}' must be a string")
    return value


def parse_labelled_lines(lines: Iterable[str], origin: str = "<labels>") -> list[LabelledPaper]:
    """Parse labelled JSONL lines (blank lines skipped); raises UsageError naming the bad line."""
    papers: list[LabelledPaper] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj = _parse_object(origin, lineno, line)
        paper_id = _text_field(origin, lineno, obj, "id", required=True)
        title = _text_field(origin, lineno, obj, "title", required=True)
        abstract = _text_field(origin, lineno, obj, "abstract", required=False)
        topics = obj.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
            raise _line_error(origin, lineno, "'topics' must be a list of topic names")
        if paper_id in seen:
            raise _line_error(origin, lineno, f"duplicate id {paper_id!r}")
        seen.add(paper_id)
        papers.append(LabelledPaper(paper_id, title, abstract, tuple(dict.fromkeys(topics))))
    return papers


def load_labelled(path: str | Path) -> list[LabelledPaper]:
    """Read a labelled JSONL file: ``{"id", "title", "abstract", "topics": [...]}`` per line.

    Raises UsageError for an unreadable file or a malformed line (naming the line number).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read labels file {path}: {err}") from err
    return parse_labelled_lines(text.splitlines(), origin=str(path))


def evaluate(tagger: Tagger, papers: Sequence[LabelledPaper]) -> EvalReport:
    """Tag every paper and compare with its labels, topic by topic."""
    known = tagger.topic_names
    extra = sorted({t for p in papers for t in p.topics} - set(known))
    counts = {name: [0, 0, 0] for name in (*known, *extra)}
    mistakes: list[Mistake] = []
    for paper in papers:
        predicted = {a.topic for a in tagger.tag(paper.title, paper.abstract)}
        gold = set(paper.topics)
        for name in predicted | gold:
            if name in predicted and name in gold:
                counts[name][0] += 1
            elif name in predicted:
                counts[name][1] += 1
                mistakes.append(Mistake(paper.id, name, "fp", paper.title))
            else:
                counts[name][2] += 1
                mistakes.append(Mistake(paper.id, name, "fn", paper.title))
    scores = tuple(TopicScore(name, tp, fp, fn, known=name in known)
                   for name, (tp, fp, fn) in counts.items())
    return EvalReport(len(papers), scores, tuple(mistakes))


def format_report(report: EvalReport) -> str:
    """A fixed-width table, one row per topic; the last line is exactly ``macro_f1=0.NNN``."""
    width = max([len("topic"), *(len(t.topic) for t in report.topics)])
    header = f"{'topic':<{width}}  support   tp   fp   fn  precision  recall     f1"
    rows = [header]
    for t in report.topics:
        if not t.measured:
            rows.append(f"{t.topic:<{width}}  {0:>7}  {0:>3}  {0:>3}  {0:>3}  {'n/a':>9}  {'n/a':>6}  {'n/a':>5}")
            continue
        note = "" if t.known else "  (not a tagger topic)"
        rows.append(f"{t.topic:<{width}}  {t.support:>7}  {t.tp:>3}  {t.fp:>3}  {t.fn:>3}  "
                    f"{t.precision:>9.3f}  {t.recall:>6.3f}  {t.f1:>5.3f}{note}")
    measured = sum(1 for t in report.topics if t.measured)
    rows.append(f"papers={report.papers} topics={measured}")
    rows.append(f"macro_f1={report.macro_f1:.3f}")
    return "\n".join(rows)


def report_json(report: EvalReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (for ``--json``), mistakes included."""
    return {
        "papers": report.papers,
        "macro_f1": round(report.macro_f1, 4),
        "topics": {
            t.topic: {
                "support": t.support, "tp": t.tp, "fp": t.fp, "fn": t.fn,
                "precision": round(t.precision, 4), "recall": round(t.recall, 4), "f1": round(t.f1, 4),
                "measured": t.measured, "known": t.known,
            }
            for t in report.topics
        },
        "mistakes": [{"id": m.id, "topic": m.topic, "kind": m.kind, "title": m.title}
                     for m in report.mistakes],
    }


def tag_jsonl(tagger: Tagger, lines_in: Iterable[str], origin: str = "input") -> Iterator[str]:
    """Tag JSONL papers: ``{"id", "title", "abstract"}`` in, one line per paper out, in input order.

    Output lines are ``{"id", "topics": [...], "scores": {topic: float}, "why": {topic: [...]}}``
    (without a trailing newline), topics best first. Blank lines are skipped; other keys are ignored.
    Raises UsageError naming the line number of the first malformed line, after yielding the lines
    before it.
    """
    for lineno, line in enumerate(lines_in, start=1):
        if not line.strip():
            continue
        obj = _parse_object(origin, lineno, line)
        paper_id = _text_field(origin, lineno, obj, "id", required=True)
        title = _text_field(origin, lineno, obj, "title", required=False)
        abstract = _text_field(origin, lineno, obj, "abstract", required=False)
        assigned = tagger.tag(title, abstract)
        yield json.dumps({
            "id": paper_id,
            "topics": [a.topic for a in assigned],
            "scores": {a.topic: a.score for a in assigned},
            "why": {a.topic: list(a.why) for a in assigned},
        }, ensure_ascii=False)


def measure_tag_rate(tagger: Tagger, papers: Sequence[Paper | tuple[str, str]],
                     seconds: float = 1.0) -> float:
    """Papers tagged per CPU-second of this process (other load on the machine does not count).

    ``papers`` (Paper objects or (title, abstract) pairs) are tagged in a loop, in full passes, until
    ``seconds`` of CPU time have gone by (at least one pass). Raises ValueError for no papers.
    """
    pairs = [(p.title, p.abstract) if isinstance(p, Paper) else p for p in papers]
    if not pairs:
        raise ValueError("measure_tag_rate needs at least one paper")
    done = 0
    start = time.process_time()
    while True:
        for title, abstract in pairs:
            tagger.tag(title, abstract)
        done += len(pairs)
        spent = time.process_time() - start
        if spent >= seconds:
            return done / max(spent, 1e-9)


_STARTUP_PROBE = """\
import time
wall, cpu = time.perf_counter(), time.process_time()
from digest.tagger import Tagger
from digest.topics import default_topics
Tagger(default_topics()).tag("warm-up", "")
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def measure_startup_seconds(python: str = sys.executable) -> tuple[float, float]:
    """(wall, CPU) seconds a fresh interpreter takes to import the tagger, build it from the default
    topics and tag one paper; the interpreter's own start-up is not included."""
    done = subprocess.run([python, "-c", _STARTUP_PROBE], capture_output=True, text=True, check=True,
                          timeout=60)
    wall, cpu = done.stdout.split()[-2:]
    return float(wall), float(cpu)
