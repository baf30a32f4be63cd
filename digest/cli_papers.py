"""Commands over papers: ``fetch``, ``tag`` (and ``--explain``), ``tagger-eval``, ``papers list``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from digest.cli_app import App, RichProgress, handle_errors, parse_date, pass_app
from digest.errors import UsageError
from digest.terminal import printable

if TYPE_CHECKING:
    from digest.tagger import Tagger

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.


@click.command()
@click.option("--source", "sources", multiple=True, metavar="NAME",
              help="Only this source (repeatable): seed, hf_daily, hf_papers, arxiv, arxiv_rss.")
@click.option("--date", "day", metavar="YYYY-MM-DD", help="The listing day to fetch (default: the latest).")
@pass_app
@handle_errors
def fetch(app: App, sources: tuple[str, ...], day: str | None) -> None:
    """Pull new listings from the enabled sources into the store, then tag them.

    Prints one line per source: source=NAME new=N updated=N errors=N. Exits 1 only if every
    source failed.

    \b
    Example:
      digest fetch --source hf_daily --date 2026-08-18
    """
    app.creates_database = True
    summaries = app.pipeline.fetch(list(sources) or None, parse_date(day))
    for s in summaries:
        click.echo(s.line())
        if s.errors:
            click.echo(f"error: {s.source}: {printable(s.reason)}", err=True)
    if summaries and all(s.errors for s in summaries):
        sys.exit(1)


@click.command()
@click.option("--input", "input_path", metavar="F.jsonl", help="Classify this JSONL file ('-' = stdin).")
@click.option("--output", "output_path", metavar="F.jsonl", default="-", show_default=True,
              help="Where to write the results ('-' = stdout).")
@click.option("--all", "retag_all", is_flag=True, help="Re-tag every stored paper (after editing topics).")
@click.option("--explain", "explain_id", metavar="ID", help="Show why a stored paper got or missed each topic.")
@click.option("--json", "as_json", is_flag=True, help="With --explain: print JSON.")
@pass_app
@handle_errors
def tag(app: App, input_path: str | None, output_path: str, retag_all: bool, explain_id: str | None,
        as_json: bool) -> None:
    """Tag papers with topics.

    With --input, classify one JSON object per line ({"id","title","abstract"}) and write
    {"id","topics","scores","why"} per line, in input order. Without it, tag the stored papers that
    are not tagged yet (--all: every stored paper, with a progress bar). --explain ID prints, per
    topic, the decision, the score against its threshold and the words for and against.

    \b
    Examples:
      digest tag --input papers.jsonl --output tagged.jsonl
      digest tag --all
      digest tag --explain 2608.15265
    """
    if explain_id is not None:
        _explain(app, explain_id, as_json)
        return
    if input_path is None:
        if retag_all:
            app.store.mark_all_untagged()
        progress = RichProgress("tagging")
        try:
            tagged = app.pipeline.tag_pending(progress=progress)
        finally:
            progress.stop()
        click.echo(f"tagged={tagged}")
        return
    from digest.tagger_eval import tag_jsonl

    tagger = _tagger(app)
    origin = "stdin" if input_path == "-" else input_path
    with _open_in(input_path) as src, _open_out(output_path) as dst:
        for line in tag_jsonl(tagger, _utf8_lines(src, origin), origin):
            dst.write(line + "\n")


def _tagger(app: App, known: Mapping[str, tuple[str, str]] | None = None) -> Tagger:
    """The configured tagger; the store is opened only to look up example ids of topics defined in
    words (so tagging a file needs no database otherwise). ``known`` (papers at hand, such as the
    labelled file of tagger-eval) is asked first, so an evaluation runs where nothing was fetched yet."""
    from digest.tagger import Tagger

    def example_text(paper_id: str) -> tuple[str, str] | None:
        if known is not None and paper_id in known:
            return known[paper_id]
        database = app.settings.database.sqlite_path
        if database is not None and not database.exists():
            return None  # no database yet: the example is reported missing, not a database made
        found = app.store.list_papers(ids=[paper_id])
        return (found[0].title, found[0].abstract) if found else None

    return Tagger(app.settings.enabled_topics, examples=example_text)


def _explain(app: App, paper_id: str, as_json: bool) -> None:
    found = app.store.list_papers(ids=[paper_id])
    if not found:
        raise UsageError(f"no stored paper {paper_id!r} (digest papers list shows the stored ones)")
    paper = found[0]
    verdicts = app.pipeline.tagger.explain(paper.title, paper.abstract)
    if as_json:
        click.echo(json.dumps({"id": paper.id, "title": paper.title, "topics": [
            {"topic": v.topic, "kind": v.kind, "assigned": v.assigned, "score": v.score, "threshold": v.threshold,
             "rule_points": v.rule_points, "rule_terms": list(v.rule_terms), "for": list(v.for_terms),
             "against": list(v.against_terms), "note": v.note} for v in verdicts]}))
        return
    click.echo(f"{paper.id}  {paper.title}")
    for v in verdicts:
        mark = "yes" if v.assigned else "no "
        click.echo(f"  {mark} {v.topic}: {v.kind} score {v.score:.3f} (threshold {v.threshold:.3f})"
                   + (f"; {v.note}" if v.note else ""))
        if v.rule_terms:
            click.echo(f"      rule evidence ({v.rule_points:.2f} x min_score): {', '.join(v.rule_terms)}")
        if v.for_terms:
            click.echo(f"      words for: {', '.join(v.for_terms)}")
        if v.against_terms:
            click.echo(f"      words against: {', '.join(v.against_terms)}")


@contextmanager
def _open_in(path: str) -> Iterator[Any]:
    """The input as bytes (stdin for "-"): lines are decoded one by one so a bad one is named."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    with fh:
        yield fh


def _utf8_lines(raw: Iterator[bytes], origin: str) -> Iterator[str]:
    """Each line of ``raw`` decoded; UsageError naming the line of the first one that is not UTF-8."""
    for lineno, line in enumerate(raw, start=1):
        try:
            yield line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UsageError(f"{origin}:{lineno}: not UTF-8 (byte 0x{line[err.start]:02x})") from err


@contextmanager
def _open_out(path: str) -> Iterator[Any]:
    if path == "-":
        yield sys.stdout
        return
    try:
        fh = open(path, "w", encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from err
    with fh:
        yield fh


@click.command("tagger-eval")
@click.option("--labels", "labels_path", required=True, metavar="F.jsonl",
              help="Labelled papers: {\"id\",\"title\",\"abstract\",\"topics\":[...]} per line.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
@handle_errors
def tagger_eval(app: App, labels_path: str, as_json: bool) -> None:
    """Measure the tagger: per-topic precision, recall, F1 and the macro-F1.

    The last line is macro_f1=0.NNN.

    \b
    Example:
      digest tagger-eval --labels tests/fixtures/labels/seed_topics.jsonl
    """
    from digest.tagger_eval import evaluate, format_report, load_labelled, report_json

    labelled = load_labelled(Path(labels_path))
    report = evaluate(_tagger(app, {p.id: (p.title, p.abstract) for p in labelled}), labelled)
    if as_json:
        click.echo(json.dumps(report_json(report)))
        click.echo(f"macro_f1={report.macro_f1:.3f}")
    else:
        click.echo(format_report(report))


@click.group()
def papers() -> None:
    """Look at the papers in the store.

    \b
    Example:
      digest papers list --topic diffusion
    """


@papers.command("list")
@click.option("--since", metavar="YYYY-MM-DD", help="Only papers listed on or after this day.")
@click.option("--topic", metavar="T", help="Only papers tagged with this topic.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
@handle_errors
def papers_list(app: App, since: str | None, topic: str | None, as_json: bool) -> None:
    """List stored papers, newest listing first: id, listing day, topics, title.

    The listing day is the day of the listing that carried the paper (HF's daily date, arXiv's
    announcement, the day fetched), not when it was fetched: that is first_seen in --json.

    \b
    Example:
      digest papers list --since 2026-08-18 --json
    """
    if topic is not None and topic not in app.settings.topics:
        raise UsageError(f"unknown topic {topic!r}")
    stored = app.store.list_papers(listed_since=parse_date(since), topic=topic)
    # Newest listing first; within a day the store's order (newest fetched first) stays.
    stored.sort(key=lambda p: p.listed_on or date.min, reverse=True)
    for p in stored:
        listed = p.listed_on.isoformat() if p.listed_on else None
        if as_json:
            click.echo(json.dumps({
                "id": p.id, "title": p.title, "topics": list(p.topic_names), "sources": list(p.sources),
                "authors": list(p.authors), "url": p.link, "upvotes": p.upvotes, "version": p.version,
                "listed_on": listed, "first_seen": p.first_seen.isoformat() if p.first_seen else None,
                "why": {a.topic: list(a.why) for a in p.topics},
            }))
        else:
            click.echo(f"{printable(p.id)}\t{listed or '-'}\t{','.join(p.topic_names) or '-'}\t{printable(p.title)}")
