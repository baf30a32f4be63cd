"""Commands for whoever runs the service: ``status``, ``rotate-key``, ``daemon``, ``serve``, ``bench``."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from digest.cli_app import App, handle_errors, pass_app
from digest.errors import UsageError

# Start-up time matters (`digest --help`, `subscribers list`): the database layer, pydantic, rich,
# templates and HTTP are imported inside the commands that use them, never here.


@click.command()
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


@click.command("rotate-key")
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


@click.command()
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


@click.command()
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


@click.command()
@click.option("--subscribers", "n_subscribers", default=10_000, show_default=True, type=int,
              help="Readers in the generated workload (mixed preferences).")
@click.option("--papers", "n_papers", default=300, show_default=True, type=int,
              help="Papers in the workload (recorded ones, paired anew past their number).")
@click.option("--only", type=click.Choice(["render", "send", "memory", "tagger", "distinct", "mta"]),
              multiple=True, help="Run only these parts (repeatable).")
@pass_app
@handle_errors
def bench(app: App, n_subscribers: int, n_papers: int, only: tuple[str, ...]) -> None:
    """Run the benchmarks and print figures; the last lines are key=value.

    render_per_s (the real path, the better of one process and two at once), render_speedup (the
    real path at its best against Jinja -> MJML -> premailer per email in one process, by CPU time;
    the table adds the speed-up per core), send_ratio (Pipeline.send against a bare smtplib loop, same
    bytes), peak_rss_mb (a full send to a null mailer), tag_per_s, distinct_per_s (every reader a
    different set of 20 papers, two processes at once), mta_ratio and first_delivery_s (digest send
    through a private Postfix, or the aiosmtpd sink where Postfix cannot run, against a bare smtplib
    loop; seconds from launch to the first message accepted). Takes a few minutes at 10,000 readers.

    \b
    Example:
      digest bench --subscribers 100000
      digest bench --only render --only tagger
    """
    # The benchmarks live beside the package in a checkout (benchmarks/, tests/samples.py and the recorded
    # papers in tests/fixtures), not in it: an installed wheel has none of them.
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "suite.py").is_file() or not (checkout / "tests" / "samples.py").is_file():
        raise UsageError("digest bench runs from a checkout of the repository (its benchmarks/ and tests/ "
                         f"folders), and this digest is installed at {Path(__file__).parent}: clone the "
                         "repository and run `make bench` there")
    sys.path.insert(0, str(checkout))
    suite = importlib.import_module("benchmarks.suite")
    suite.run_bench(app.settings, n_subscribers=n_subscribers, n_papers=n_papers, parts=list(only) or None)
