"""Commands that make issues and mail them: ``preview``, ``send``, ``run``."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli_app import App, RichProgress, handle_errors, parse_date, pass_app
from digest.errors import UsageError
from digest.terminal import printable

if TYPE_CHECKING:
    from digest.preview import Format
    from digest.send_engine import SendSummary

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.


@click.command()
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
    issue_day = parse_date(day)
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
    issue_date = parse_date(day)
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
    progress = RichProgress()
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
        for address, reason in summary.passed_over:
            click.echo(f"would skip {printable(address)}: {reason}")
        click.echo(f"would_send={len(summary.planned)} (dry run: nothing sent or recorded)")
    else:
        _explain_unfinished(summary)
    click.echo(summary.line())
    if summary.incomplete:
        sys.exit(1)


def _explain_unfinished(summary: SendSummary) -> None:
    """One line on stderr for each reason the send did not finish its job (it then exits 1)."""
    if summary.relay_refusing:
        click.echo(f"error: {printable(summary.relay_refusing)}; fix the relay (or [smtp]) and run the send "
                   "again: it delivers what is pending", err=True)
    elif summary.stopped:
        click.echo(f"stopped before the end: {summary.pending} deliveries left pending (a re-run sends them)",
                   err=True)
    elif summary.pending:
        retry = f", {summary.deferred} of them to retry after a temporary failure" if summary.deferred else ""
        click.echo(f"{summary.pending} deliveries left pending{retry} (a re-run or the daemon sends them)", err=True)
    if summary.unknown:
        click.echo(f"{summary.unknown} deliveries of unknown outcome (the server may have them): "
                   "digest send --retry-unknown resends them", err=True)


@click.command()
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
    delivered. Last line: sent=N skipped=N failed=N, then pending=N and unknown=N when there are
    some; exit 1 if any failed, any is pending or unknown, or the send was stopped (SIGTERM, Ctrl-C)
    or found the relay refusing mail (most recipients refused: nobody is suppressed, all stays
    pending). A --date more than 7 days from today (UTC) needs --force (exit 2 without it).

    \b
    Example:
      digest send --dry-run
      digest send --date 2026-08-18
      digest send --deliver-only
    """
    if deliver_only and (dry_run or email):
        raise UsageError("--deliver-only cannot be combined with --dry-run or --subscriber")
    _run_send(app, day, email, dry_run, retry_unknown, deliver_only, force)


@click.command()
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Issue date and listing day (default: today).")
@click.option("--force", is_flag=True, help=f"Allow a --date more than {FAR_DATE_DAYS} days from today.")
@pass_app
@handle_errors
def run(app: App, day: str | None, force: bool) -> None:
    """Fetch, tag and send once (a --date more than 7 days from today needs --force).

    --date D is the issue date and the listing day: sources that can fetch a given day (hf_daily,
    hf_papers, arxiv, a folder of recorded days) fetch day D's listing; the others their latest.

    \b
    Examples:
      digest run && ls var/outbox/
      digest --config config/replay.toml run --date 2026-08-19 --force
    """
    issue_date = parse_date(day)
    _check_date_near(issue_date, _utc_today(), force)
    app.creates_database = True
    # --date is also the listing day: the sources that can fetch a given day fetch that day's listing.
    summaries = app.pipeline.fetch(None, issue_date)
    for s in summaries:
        click.echo(s.line())
        if s.errors:
            click.echo(f"error: {s.source}: {printable(s.reason)}", err=True)
    _run_send(app, day, None, False, force=force)
    if app.settings.mailer.backend == "file":
        click.echo(f"outbox: {Path(app.settings.mailer.path).resolve()}", err=True)
