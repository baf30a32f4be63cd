"""The ``feedback`` commands: a reader's verdicts on papers, by hand or from their library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from digest.cli_app import App, handle_errors, pass_app
from digest.errors import UsageError
from digest.terminal import printable

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.


@click.group()
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
