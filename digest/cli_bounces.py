"""The ``bounces`` commands: ingest a report (as Postfix's pipe runs it), fetch them over IMAP, list."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from digest.cli_app import App, handle_errors, is_database_error, pass_app
from digest.errors import DigestError
from digest.terminal import printable

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.


# More than any bounce or complaint needs (they quote at most the original message): the rest is dropped.
_MAX_REPORT_BYTES = 20 * 1024 * 1024


EX_TEMPFAIL = 75  # sysexits.h: what a Postfix pipe transport (or procmail) reads as "try again later"


@click.group()
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
        if not is_database_error(err):
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
