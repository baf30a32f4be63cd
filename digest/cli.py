"""The command line: thin commands over the pipeline and the store (each docstring is its --help)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from digest import __version__
from digest.errors import DigestError, UsageError
from digest.terminal import SafeFormatter, printable

if TYPE_CHECKING:
    from rich.console import Console

    from digest.config import Settings
    from digest.pipeline import Pipeline
    from digest.preview import Format
    from digest.store import Store
    from digest.tagger import Tagger

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.

F = TypeVar("F", bound=Callable[..., Any])
# What `subscribers update --status` accepts (digest.models.SubscriberStatus; a test keeps them equal).
SUBSCRIBER_STATUSES = ("pending", "confirmed", "unsubscribed", "suppressed")


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


class App:
    """What every command gets: the settings, and the store and pipeline built on first use.

    Only the commands that are meant to start a database (``run``, ``fetch``, ``subscribers add`` and
    ``import``, ``daemon``, ``serve``) set ``creates_database``; the others, run where no SQLite file
    exists yet, say so instead of leaving an empty database behind in whatever folder they ran in.
    """

    def __init__(self, config_path: str | None, verbose: int) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self.creates_database = False
        self._settings: Settings | None = None
        self._store: Store | None = None
        self._pipeline: Pipeline | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from digest.config import load_settings

            self._settings = load_settings(self.config_path)
            _setup_logging(self._settings.logging.level, self.verbose)
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            database = self.settings.database
            missing = database.sqlite_path
            if missing is not None and (missing.exists() or self.creates_database):
                missing = None
            if missing is not None:
                raise UsageError(f"no database at {missing.resolve()} (`digest run` or `digest fetch` "
                                 "creates it; or pass --config)")
            from digest.store import Store

            self._store = Store(database.url)
        return self._store

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            from digest.pipeline import Pipeline

            self._pipeline = Pipeline(self.settings, self.store)
        return self._pipeline


def _setup_logging(level: str, verbose: int) -> None:
    chosen = "DEBUG" if verbose > 0 else level
    root = logging.getLogger()
    if not any(getattr(h, "_digest", False) for h in root.handlers):
        # One line per event (grep-able, also under systemd/cron); names the source or subscriber.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
        handler._digest = True  # type: ignore[attr-defined]  # our mark: set up once per process
        root.addHandler(handler)
    from digest import redact

    redact.install()  # link tokens never reach a log line, whoever logs them
    root.setLevel(chosen)
    for noisy in ("httpx", "httpcore", "cssutils", "CSSUTILS", "alembic", "apscheduler.scheduler",
                  "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(chosen)))


def handle_errors(func: F) -> F:
    """Turn DigestError into one line on stderr and the SPEC's exit code; never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as err:
            click.echo(f"error: {printable(err)}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as err:
            if not _is_database_error(err):
                raise
            # A database that went away mid-run: one line, not a traceback.
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            click.echo(f"error: database: {printable(reason)}", err=True)
            sys.exit(1)

    return cast(F, wrapper)


def _is_database_error(err: Exception) -> bool:
    # SQLAlchemy is only imported once a command opened the store; if it is not loaded, it did not fail.
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(err, exc.SQLAlchemyError)


pass_app = click.make_pass_decorator(App)


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise UsageError(f"invalid date {value!r}: expected YYYY-MM-DD") from err


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $DIGEST_CONFIG, else ./config/digest.toml, else built-in defaults).")
@click.option("-v", "--verbose", count=True, help="More log output (debug).")
@click.version_option(__version__, prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Personal email digests of new machine-learning papers, grouped by topic.

    \b
    Example (the whole job once, on the built-in demo):
      digest run
      ls var/outbox/
    """
    ctx.obj = App(config_path, verbose)


# ---- fetch / tag --------------------------------------------------------------------------------


@cli.command()
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
    summaries = app.pipeline.fetch(list(sources) or None, _parse_date(day))
    for s in summaries:
        click.echo(s.line())
        if s.errors:
            click.echo(f"error: {s.source}: {printable(s.reason)}", err=True)
    if summaries and all(s.errors for s in summaries):
        sys.exit(1)


@cli.command()
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
        progress = _RichProgress("tagging")
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


@cli.command("tagger-eval")
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


# ---- subscribers --------------------------------------------------------------------------------


@cli.group()
def subscribers() -> None:
    """Manage subscribers: add, update, remove, list, import.

    \b
    Example:
      digest subscribers add ada@example.org --topics pruning,nas --tz Europe/London
    """


def _subscriber_options(func: F) -> F:
    options = [
        click.option("--name", default=None, help="Display name."),
        click.option("--topics", default=None, help="Comma-separated topic names (see config)."),
        click.option("--keywords", default=None, help="Comma-separated words that qualify a paper."),
        click.option("--authors", default=None, help='Followed authors, ";"-separated: "A B;C D".'),
        click.option("--exclude", default=None, help="Comma-separated words that disqualify a paper."),
        click.option("--frequency", type=click.Choice(["daily", "weekly"]), default=None),
        click.option("--send-at", "send_at", default=None, metavar="HH:MM", help="Local send time."),
        click.option("--tz", default=None, metavar="Area/City", help="IANA time zone."),
        click.option("--max-papers", "max_papers", type=int, default=None, help="Papers per issue at most."),
        click.option("--weekday", type=click.IntRange(0, 6), default=None,
                     help="Weekly issue day, 0 = Monday."),
        click.option("--send-empty/--no-send-empty", "send_empty", default=None,
                     help="Send an issue even when nothing new matched."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@subscribers.command("add")
@click.argument("email")
@_subscriber_options
@pass_app
@handle_errors
def subscribers_add(app: App, /, email: str, **opts: Any) -> None:
    """Add a confirmed subscriber.

    Without --topics, --keywords and --authors they follow every topic; with any of them, exactly
    what is named. Invalid address, unknown topic or time zone: exit 2.

    \b
    Example:
      digest subscribers add ada@example.org --topics pruning,nas --keywords "low-rank" \\
          --authors "Song Han;Yann LeCun" --frequency weekly --send-at 07:30 --tz Europe/London
    """
    app.creates_database = True
    from digest.subscribers import apply_preferences, new_subscriber

    sub = apply_preferences(app.settings, new_subscriber(app.settings, email), **opts)
    stored = app.store.add_subscriber(sub)
    click.echo(f"added {stored.email} topics={','.join(stored.topics) or '(all)'}")


@subscribers.command("update")
@click.argument("email")
@_subscriber_options
@click.option("--status", type=click.Choice(SUBSCRIBER_STATUSES), default=None)
@click.option("--pause/--resume", "paused", default=None, help="Stop or restart sending for now.")
@pass_app
@handle_errors
def subscribers_update(app: App, /, email: str, status: str | None, paused: bool | None, **opts: Any) -> None:
    """Change a subscriber's preferences; options not given stay as they are.

    \b
    Example:
      digest subscribers update ada@example.org --topics diffusion --max-papers 10
    """
    from digest.models import SubscriberStatus
    from digest.subscribers import apply_preferences, validate_email

    sub = app.store.get_subscriber(validate_email(email))
    if sub is None:
        raise UsageError(f"no subscriber {email}")
    sub = apply_preferences(app.settings, sub, **opts)
    if status is not None:
        sub = replace(sub, status=SubscriberStatus(status))
    if paused is not None:
        sub = replace(sub, paused=paused)
    app.store.save_subscriber(sub)
    click.echo(f"updated {sub.email}")


@subscribers.command("remove")
@click.argument("email")
@pass_app
@handle_errors
def subscribers_remove(app: App, email: str) -> None:
    """Delete a subscriber and their issue history.

    \b
    Example:
      digest subscribers remove ada@example.org
    """
    if not app.store.remove_subscriber(email.strip().lower()):
        raise UsageError(f"no subscriber {email}")
    click.echo(f"removed {email}")


@subscribers.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
@handle_errors
def subscribers_list(app: App, as_json: bool) -> None:
    """List subscribers.

    \b
    Example:
      digest subscribers list --json | jq -r .email
    """
    from digest.subscribers import subscriber_json

    health = app.store.bounce_info() if as_json else {}
    for sub in app.store.iter_subscribers():
        if as_json:
            click.echo(json.dumps({**subscriber_json(sub), **health.get(sub.email, {})}))
        else:
            # Every field printable: a keyword posted to /subscribe must not fake a row or a column.
            topics = ",".join(map(printable, sub.topics)) or "(all topics)"
            extra = f" keywords={','.join(map(printable, sub.keywords))}" if sub.keywords else ""
            click.echo(f"{printable(sub.email)}\t{sub.status.value}\t{sub.frequency.value} {sub.send_at:%H:%M} "
                       f"{printable(sub.tz)}\t{topics}{extra}")


@subscribers.command("import")
@click.argument("csv_path", metavar="F.csv", type=click.Path(dir_okay=False))
@pass_app
@handle_errors
def subscribers_import(app: App, csv_path: str) -> None:
    """Add or update subscribers from a CSV file.

    Header: email,name,topics,keywords,exclude,authors,frequency,send_at,tz,max_papers (only
    email required; lists separated by ";"); UTF-8, no field over 128 KB. All or nothing: the whole
    file is checked first, and if any row is invalid each is reported with its line number,
    nothing is imported and the command exits 2. Existing addresses are updated (their status kept).

    \b
    Example:
      digest subscribers import people.csv
    """
    app.creates_database = True
    from digest.subscribers import import_csv

    result = import_csv(app.settings, app.store, Path(csv_path))
    for problem in result.problems:
        click.echo(f"error: {printable(problem)}", err=True)
    if result.invalid > len(result.problems):
        click.echo(f"error: ... and {result.invalid - len(result.problems)} more invalid rows", err=True)
    if result.invalid:
        click.echo(f"added=0 updated=0 invalid={result.invalid} (nothing imported: fix the file and run again)")
        sys.exit(2)
    click.echo(f"added={result.added} updated={result.updated} invalid=0")


# ---- feedback -----------------------------------------------------------------------------------


@cli.group()
def feedback() -> None:
    """What readers told the digest: "more like this" / "less like this" per paper, and their libraries.

    Each reader's verdicts re-rank their next issues (a reader without any gets exactly the issue
    they would get anyway). Readers give them from their mail; these commands are for admins and
    scripts.

    \b
    Example:
      digest feedback add ada@example.org 2401.01234 more
    """


@feedback.command("add")
@click.argument("email")
@click.argument("paper_id")
@click.argument("verdict", metavar="more|less")
@pass_app
@handle_errors
def feedback_add(app: App, email: str, paper_id: str, verdict: str) -> None:
    """Record a reader's verdict on a stored paper; a later verdict replaces an earlier one.

    Unknown address, unknown paper or a verdict other than more/less: exit 2.

    \b
    Example:
      digest feedback add ada@example.org 2401.01234 less
    """
    from datetime import UTC
    from datetime import datetime as dt

    from digest.feedback import give, parse_verdict, reader

    chosen = parse_verdict(verdict)
    sub = reader(app.store, email)
    changed = give(app.store, sub, paper_id.strip(), chosen, dt.now(UTC))
    click.echo(f"{'recorded' if changed else 'unchanged'} {printable(sub.email)} {printable(paper_id.strip())} "
               f"{chosen.value}")


@feedback.command("clear")
@click.argument("email")
@click.argument("paper_id", required=False)
@pass_app
@handle_errors
def feedback_clear(app: App, email: str, paper_id: str | None) -> None:
    """Forget a reader's verdict on one paper, or all their verdicts (library imports included).

    \b
    Example:
      digest feedback clear ada@example.org 2401.01234
      digest feedback clear ada@example.org
    """
    from digest.feedback import reader

    sub = reader(app.store, email)
    assert sub.id is not None
    removed = app.store.clear_feedback(sub.id, paper_id.strip() if paper_id else None)
    click.echo(f"cleared={removed}")


@feedback.command("list")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: paper_id, verdict, at.")
@pass_app
@handle_errors
def feedback_list(app: App, email: str, as_json: bool) -> None:
    """A reader's verdicts, oldest first.

    \b
    Example:
      digest feedback list ada@example.org --json | jq -r 'select(.verdict == "more") | .paper_id'
    """
    from digest.feedback import feedback_json, reader

    sub = reader(app.store, email)
    assert sub.id is not None
    for item in app.store.list_feedback(sub.id):
        if as_json:
            click.echo(json.dumps(feedback_json(item)))
        else:
            click.echo(f"{printable(item.paper_id)}\t{item.verdict.value}\t{item.at:%Y-%m-%d %H:%M}")


@feedback.command("import")
@click.argument("email")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@pass_app
@handle_errors
def feedback_import(app: App, email: str, file: str) -> None:
    """Start a reader's taste from their library: BibTeX or RIS (Zotero, Mendeley, Google Scholar
    exports) or one arXiv id or URL per line ('-' = stdin).

    Every stored paper the file names (by arXiv id, else by title) counts as "more like this"; the
    last line says how many were used and how many were not found in the store.

    \b
    Example:
      digest feedback import ada@example.org my-library.bib
    """
    from datetime import UTC
    from datetime import datetime as dt

    from digest.feedback import import_library, reader

    sub = reader(app.store, email)
    if file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(file).read_bytes()
        except OSError as err:
            raise UsageError(f"cannot read {file}: {err.strerror}") from err
    result = import_library(app.store, sub, data, Path(file).name if file != "-" else "stdin", dt.now(UTC))
    for entry in result.not_found[:20]:
        shown = entry.arxiv_id or entry.title
        click.echo(f"not found: {printable(shown[:100])}", err=True)
    if len(result.not_found) > 20:
        click.echo(f"not found: ... and {len(result.not_found) - 20} more", err=True)
    click.echo(result.line)


# ---- bounces ------------------------------------------------------------------------------------

# More than any bounce or complaint needs (they quote at most the original message): the rest is dropped.
_MAX_REPORT_BYTES = 20 * 1024 * 1024
EX_TEMPFAIL = 75  # sysexits.h: what a Postfix pipe transport (or procmail) reads as "try again later"


@cli.group()
def bounces() -> None:
    """Bounces and complaints: ingest one from stdin, fetch them from IMAP, list what they did.

    \b
    Example (Postfix master.cf pipe transport, see docs/deploy.md):
      digest bounces ingest --recipient bounces+12-abcdefghijklmnop@bounces.example.org < dsn.eml
    """


@bounces.command("ingest")
@click.option("--recipient", metavar="ADDR", default=None,
              help="The envelope recipient (the return path the bounce came to), e.g. Postfix's ${original_recipient}.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@pass_app
def bounces_ingest(app: App, recipient: str | None, as_json: bool) -> None:
    """Read one message on stdin (a DSN, a bounce, an ARF complaint or an auto-reply) and act on it.

    Exit 0: consumed (acted on, or ignored as not ours, forged or an auto-reply; the line says which).
    Exit 75: try again later (database or configuration unavailable; nothing was recorded), which
    Postfix's pipe transport and procmail take as "keep the message and retry". Exit 2: empty input.

    \b
    Example:
      digest bounces ingest --recipient "$ORIGINAL_RECIPIENT" < bounce.eml
    """
    raw = sys.stdin.buffer.read(_MAX_REPORT_BYTES)
    if not raw.strip():
        click.echo("error: no message on stdin", err=True)
        sys.exit(2)
    try:
        from digest.bounces import BounceProcessor

        result = BounceProcessor(app.settings, app.store).ingest(raw, "stdin", recipient)
    except DigestError as err:
        # Whatever stops us now (no database, a broken config) may be fixed later: the MTA keeps
        # the message and retries, where exit 2 or 1 would have it bounce the bounce.
        click.echo(f"error: {err} (try again later)", err=True)
        sys.exit(EX_TEMPFAIL)
    except Exception as err:
        if not _is_database_error(err):
            raise
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        click.echo(f"error: database: {reason} (try again later)", err=True)
        sys.exit(EX_TEMPFAIL)
    # What a bounce says is a stranger's text: printable only.
    click.echo(json.dumps(result.as_json()) if as_json else printable(result.line()))


@bounces.command("fetch")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message, then the summary line.")
@pass_app
@handle_errors
def bounces_fetch(app: App, as_json: bool) -> None:
    """Read the unread messages of the [bounces.imap] mailbox, act on each, remove what was consumed.

    The password comes from the environment variable [bounces.imap] password_env names
    (DIGEST_IMAP_PASSWORD by default). Last line: fetched=N bounces=N complaints=N ignored=N
    unrecognised=N deferred=N. Exit 1 if the server cannot be reached or refuses the login.

    \b
    Example:
      DIGEST_IMAP_PASSWORD=... digest bounces fetch
    """
    from digest.bounces import BounceProcessor
    from digest.bounces.imap import fetch_mailbox

    def show(result: Any) -> None:
        click.echo(json.dumps(result.as_json()) if as_json else printable(result.line()))

    summary = fetch_mailbox(app.settings, BounceProcessor(app.settings, app.store), show)
    click.echo(summary.line())


@bounces.command("list")
@click.option("--limit", default=50, show_default=True, type=int, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
@handle_errors
def bounces_list(app: App, limit: int, as_json: bool) -> None:
    """List the latest bounces and complaints and what each did.

    \b
    Example:
      digest bounces list --limit 20
    """
    for event in app.store.bounce_events(limit):
        if as_json:
            click.echo(json.dumps(event, default=str))
        else:
            click.echo(f"{event['received_at']:%Y-%m-%d %H:%M} {printable(event['email'])}\t{event['kind']}\t"
                       f"{event['action']}\t{printable(event['status'] or '-')}\t{printable(event['diagnostic'][:80])}")


# ---- papers -------------------------------------------------------------------------------------


@cli.group()
def papers() -> None:
    """Look at the papers in the store.

    \b
    Example:
      digest papers list --topic diffusion
    """


@papers.command("list")
@click.option("--since", metavar="YYYY-MM-DD", help="Only papers first seen on or after this day (UTC).")
@click.option("--topic", metavar="T", help="Only papers tagged with this topic.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
@handle_errors
def papers_list(app: App, since: str | None, topic: str | None, as_json: bool) -> None:
    """List stored papers, newest first.

    \b
    Example:
      digest papers list --since 2026-08-18 --json
    """
    from datetime import UTC

    day = _parse_date(since)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None
    if topic is not None and topic not in app.settings.topics:
        raise UsageError(f"unknown topic {topic!r}")
    for p in app.store.list_papers(since=start, topic=topic):
        if as_json:
            click.echo(json.dumps({
                "id": p.id, "title": p.title, "topics": list(p.topic_names), "sources": list(p.sources),
                "authors": list(p.authors), "url": p.link, "upvotes": p.upvotes, "version": p.version,
                "first_seen": p.first_seen.isoformat() if p.first_seen else None,
                "why": {a.topic: list(a.why) for a in p.topics},
            }))
        else:
            click.echo(f"{printable(p.id)}\t{','.join(p.topic_names) or '-'}\t{printable(p.title)}")


# ---- preview / send / run -----------------------------------------------------------------------


@cli.command()
@click.option("--subscriber", "email", required=True, metavar="EMAIL")
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Issue date (default: today); a past date "
              "shows exactly what was sent then.")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html", show_default=True)
@click.option("--out", "out_path", metavar="F", help="Write to this file instead of stdout.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in the default browser.")
@pass_app
@handle_errors
def preview(app: App, email: str, day: str | None, fmt: Format, out_path: str | None, open_browser: bool) -> None:
    """Build a subscriber's issue without sending or recording anything.

    \b
    Example:
      digest preview --subscriber ada@example.org --format html --out issue.html --open
    """
    from digest.subscribers import validate_email

    address = validate_email(email)
    issue_day = _parse_date(day)
    pipeline = app.pipeline
    sub = app.store.get_subscriber(address)
    if sub is None:
        raise UsageError(f"no subscriber {email}")
    issue_date = issue_day or pipeline.clock().date()
    issue = pipeline.preview_issue(sub, issue_date)
    message_id = pipeline.message_id(issue.id or 0)
    if fmt == "eml":
        content: str | bytes = pipeline.render_message(issue, message_id, pipeline.clock()).data
    else:
        links = pipeline.links.for_subscriber(sub.email, str(issue.id) if issue.id else None, sub.id)
        rendered = pipeline.renderer.render(issue, links, full_issue_url=links.archive)
        content = rendered.html if fmt == "html" else rendered.text
    if out_path or open_browser:
        from digest.preview import open_preview, write_preview

        written = write_preview(content, fmt, Path(out_path) if out_path else None)
        click.echo(f"wrote {written} ({issue.count} papers)", err=True)
        if open_browser and not open_preview(written):
            click.echo(f"could not start a browser; open {written} yourself", err=True)
    else:
        click.echo(content.decode("utf-8") if isinstance(content, bytes) else content)


class _RichProgress:
    """A rich progress bar on a terminal; silent otherwise (cron, CI, pipes)."""

    def __init__(self, description: str = "sending") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        console = err_console()
        self.description = description
        self.enabled = console.is_terminal
        self._bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=console, transient=True)
        self._task: Any = None

    def start(self, total: int | None) -> None:
        if self.enabled:
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)

    def stop(self) -> None:
        if self._task is not None:
            self._bar.stop()


def _seed_demo_subscribers(app: App) -> None:
    """On an empty store, add the demo subscribers named by [demo] subscribers_csv (if the file exists)."""
    from importlib.resources import as_file

    from digest.packaged import locate
    from digest.subscribers import import_csv

    csv_path = app.settings.demo.subscribers_csv
    if not csv_path or app.store.count_subscribers():
        return
    found = locate(csv_path)
    if not found.is_file():
        return
    with as_file(found) as path:
        result = import_csv(app.settings, app.store, path)
    click.echo(f"no subscribers yet: added {result.added} demo subscribers from {csv_path}", err=True)


# How far from today (UTC) an issue date may be before a send needs --force: a typo'd year
# (0001-01-01, 2062-08-18) would otherwise mail every reader an issue nobody asked for.
FAR_DATE_DAYS = 7


def _utc_today() -> date:
    from datetime import UTC

    return datetime.now(UTC).date()


def _check_date_near(issue_date: date | None, today: date, force: bool) -> None:
    if issue_date is None or force or abs((issue_date - today).days) <= FAR_DATE_DAYS:
        return
    raise UsageError(f"--date {issue_date} is {abs((issue_date - today).days)} days from today ({today}); "
                     f"add --force to send an issue dated more than {FAR_DATE_DAYS} days away")


def _run_send(app: App, day: str | None, email: str | None, dry_run: bool, retry_unknown: bool = False,
              deliver_only: bool = False, force: bool = False) -> None:
    issue_date = _parse_date(day)
    if not dry_run:
        _check_date_near(issue_date, _utc_today(), force)
    if email is not None:
        from digest.subscribers import validate_email

        email = validate_email(email)
    pipeline = app.pipeline
    _seed_demo_subscribers(app)
    if retry_unknown:
        requeued = app.store.requeue_unknown(issue_date)
        click.echo(f"requeued {requeued} deliveries of unknown outcome", err=True)
    progress = _RichProgress()
    try:
        if deliver_only:
            summary = pipeline.deliver_pending([issue_date] if issue_date else (), progress=progress)
        else:
            summary = pipeline.send(issue_date, only=email, dry_run=dry_run, progress=progress)
    finally:
        progress.stop()
    if dry_run:
        for address, count in summary.planned:
            click.echo(f"would send {count} papers to {printable(address)}")
        click.echo(f"would_send={len(summary.planned)} (dry run: nothing sent or recorded)")
    elif summary.deferred or summary.unknown:
        click.echo(f"deferred={summary.deferred} unknown={summary.unknown}")
    click.echo(summary.line())
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show who would get what; send and record nothing.")
@click.option("--subscriber", "email", metavar="EMAIL", help="Only this subscriber.")
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Issue date (default: today, UTC).")
@click.option("--retry-unknown", is_flag=True,
              help="Also resend messages whose outcome is unknown (same Message-ID).")
@click.option("--deliver-only", is_flag=True,
              help="Build no issue: deliver the pending ones (an extra sender beside the daemon), "
                   "none more than [schedule] max_lateness_hours late or past the reader's day; "
                   "without --date those dated yesterday, today and tomorrow (UTC).")
@click.option("--force", is_flag=True, help=f"Allow a --date more than {FAR_DATE_DAYS} days from today.")
@pass_app
@handle_errors
def send(app: App, dry_run: bool, email: str | None, day: str | None, retry_unknown: bool,
         deliver_only: bool, force: bool) -> None:
    """Build and deliver the issue dated D to every subscriber due that day.

    Daily subscribers are due every day, weekly ones on their weekday; the hour is the daemon's
    business. Safe to re-run and to kill at any moment: a re-run delivers only what was not
    delivered. Last line: sent=N skipped=N failed=N (exit 1 if any failed). A --date more than
    7 days from today (UTC) needs --force (exit 2 without it).

    \b
    Example:
      digest send --dry-run
      digest send --date 2026-08-18
      digest send --deliver-only
    """
    if deliver_only and (dry_run or email):
        raise UsageError("--deliver-only cannot be combined with --dry-run or --subscriber")
    _run_send(app, day, email, dry_run, retry_unknown, deliver_only, force)


@cli.command()
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Issue date and listing day (default: today).")
@click.option("--force", is_flag=True, help=f"Allow a --date more than {FAR_DATE_DAYS} days from today.")
@pass_app
@handle_errors
def run(app: App, day: str | None, force: bool) -> None:
    """Fetch, tag and send once (a --date more than 7 days from today needs --force).

    \b
    Example:
      digest run && ls var/outbox/
    """
    _check_date_near(_parse_date(day), _utc_today(), force)
    app.creates_database = True
    summaries = app.pipeline.fetch(None, None)
    for s in summaries:
        click.echo(s.line())
        if s.errors:
            click.echo(f"error: {s.source}: {printable(s.reason)}", err=True)
    _run_send(app, day, None, False, force=force)
    if app.settings.mailer.backend == "file":
        click.echo(f"outbox: {Path(app.settings.mailer.path).resolve()}", err=True)


# ---- status -------------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@pass_app
@handle_errors
def status(app: App, as_json: bool) -> None:
    """Show last fetch per source, last send and its counts, next runs, who is due, failures.

    \b
    Example:
      digest status --json
    """
    from digest.status import collect_status, format_status

    report = collect_status(app.pipeline)
    click.echo(json.dumps(report.as_json(), default=str) if as_json else format_status(report))


@cli.command("rotate-key")
@click.option("--invalidate-old-links", "invalidate", is_flag=True,
              help="Do not keep the replaced key: every link already sent stops working at once "
                   "(after a leak).")
@click.option("--forget-previous", "forget", is_flag=True,
              help="Make no new key; stop accepting links signed with the key the last rotation replaced.")
@pass_app
@handle_errors
def rotate_key(app: App, invalidate: bool, forget: bool) -> None:
    """Replace the installation's link-signing key (stored in the database) with a new random one.

    New links are signed with the new key at once; restart `digest serve` and `digest daemon` so
    they pick it up. The replaced key still verifies links already sent (unsubscribe links in old
    mail keep working) until the next rotation or --forget-previous. With $DIGEST_SECRET_KEY set,
    the environment's key is the one in use: change it there instead (exit 2).

    \b
    Example:
      digest rotate-key
      digest rotate-key --invalidate-old-links    # the key has leaked
    """
    from digest.signing_key import forget_previous_key, rotate_signing_key

    variable = app.settings.site.secret_env
    if app.settings.env_signing_key is not None:
        raise UsageError(f"the signing key in use comes from ${variable}: set a new value there instead")
    if forget and invalidate:
        raise UsageError("--forget-previous and --invalidate-old-links cannot be combined")
    if forget:
        dropped = forget_previous_key(app.store)
        click.echo("previous key forgotten: links signed with it no longer verify" if dropped
                   else "no previous key was kept")
        return
    replaced = rotate_signing_key(app.store, keep_previous=not invalidate)
    if not replaced:
        click.echo("made a new signing key (there was none yet)")
    elif invalidate:
        click.echo("new signing key; links signed with the old one no longer verify")
    else:
        click.echo("new signing key; links signed with the old one still verify until the next rotation")
    click.echo("restart `digest serve` and `digest daemon` to use it", err=True)


# ---- long-running and tools ---------------------------------------------------------------------


@cli.command()
@pass_app
@handle_errors
def daemon(app: App) -> None:
    """Run the scheduler: fetch on its schedule, send at each subscriber's local time.

    Stops cleanly on SIGTERM or SIGINT. Run exactly one daemon per database.

    \b
    Example:
      digest --config config/digest.toml daemon
    """
    app.creates_database = True
    from digest.scheduler import run_daemon

    sys.exit(run_daemon(app.pipeline))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, e.g. behind a reverse proxy).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@pass_app
@handle_errors
def serve(app: App, host: str, port: int) -> None:
    """Serve the web app: subscribe, confirm, preferences, unsubscribe, archive.

    \b
    Example:
      digest serve --host 0.0.0.0 --port 8000
    """
    app.creates_database = True
    from digest.web import serve as serve_app

    serve_app(app.pipeline, host, port)


@cli.command()
@click.option("--subscribers", "n_subscribers", default=10_000, show_default=True, type=int,
              help="Readers in the generated workload (mixed preferences).")
@click.option("--papers", "n_papers", default=300, show_default=True, type=int,
              help="Papers in the workload (recorded ones, paired anew past their number).")
@click.option("--only", type=click.Choice(["render", "send", "memory", "tagger"]), multiple=True,
              help="Run only these parts (repeatable).")
@pass_app
@handle_errors
def bench(app: App, n_subscribers: int, n_papers: int, only: tuple[str, ...]) -> None:
    """Run the benchmarks and print figures; the last lines are key=value.

    render_per_s (the real path, the better of one process and two at once), render_speedup (the
    real path at its best against Jinja -> MJML -> premailer per email in one process, by CPU time;
    the table adds the speed-up per core), send_ratio (Pipeline.send against a bare smtplib loop, same
    bytes), peak_rss_mb (a full send to a null mailer), tag_per_s. Takes about a minute at 10,000
    readers.

    \b
    Example:
      digest bench --subscribers 100000
      digest bench --only render --only tagger
    """
    from digest.bench import run_bench

    run_bench(app.settings, n_subscribers=n_subscribers, n_papers=n_papers, parts=list(only) or None)


def main() -> None:
    cli(prog_name="digest")


if __name__ == "__main__":
    main()
