"""The ``subscribers`` commands: add, update, remove, list, import."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from digest.cli_app import SUBSCRIBER_STATUSES, App, F, handle_errors, pass_app
from digest.errors import UsageError
from digest.terminal import printable

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.


@click.group()
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

    reads = app.subscriber_reads()
    health = reads.bounce_info() if as_json else {}
    for sub in reads.iter_subscribers():
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
