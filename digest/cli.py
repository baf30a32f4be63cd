"""The command line: thin commands over the pipeline and the store (each docstring is its --help).

The commands live by group in ``cli_*.py``: papers, subscribers, feedback, bounces, send, admin;
``cli_app`` holds what they share."""

from __future__ import annotations

import click

from digest import __version__
from digest.cli_admin import bench, daemon, rotate_key, serve, status
from digest.cli_app import App
from digest.cli_bounces import bounces
from digest.cli_feedback import feedback
from digest.cli_papers import fetch, papers, tag, tagger_eval
from digest.cli_send import preview, run, send
from digest.cli_subscribers import subscribers


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


for command in (bench, bounces, daemon, feedback, fetch, papers, preview, rotate_key, run, send, serve, status,
                subscribers, tag, tagger_eval):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="digest")


if __name__ == "__main__":
    main()
