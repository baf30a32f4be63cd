"""What every command of the command line shares: the ``App`` (settings, store and pipeline
made on first use), turning errors into one line and an exit code, logging, small parsers and
the progress bar."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import date
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from digest.errors import DigestError, UsageError
from digest.terminal import SafeFormatter, printable

if TYPE_CHECKING:
    from rich.console import Console

    from digest.config import DatabaseSettings, Settings
    from digest.pipeline import Pipeline
    from digest.store import Store
    from digest.store.quick import SubscriberReads

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
            database = self._existing_database()
            from digest.store import Store

            self._store = Store(database.url)
        return self._store

    def _existing_database(self) -> DatabaseSettings:
        database = self.settings.database
        missing = database.sqlite_path
        if missing is not None and (missing.exists() or self.creates_database):
            missing = None
        if missing is not None:
            raise UsageError(f"no database at {missing.resolve()} (`digest run` or `digest fetch` "
                             "creates it; or pass --config)")
        return database

    def subscriber_reads(self) -> SubscriberReads:
        """What reads the subscribers (``iter_subscribers``, ``bounce_info``): an up-to-date SQLite
        file straight (``digest.store.quick``: a short command then never loads SQLAlchemy) while the
        store is not open, else the store."""
        path = self._existing_database().sqlite_path
        if self._store is None and path is not None:
            from digest.store.quick import QuickReader

            reader = QuickReader.open(path)
            if reader is not None:
                return reader
        return self.store

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
            if not is_database_error(err):
                raise
            # A database that went away mid-run: one line, not a traceback.
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            click.echo(f"error: database: {printable(reason)}", err=True)
            sys.exit(1)

    return cast(F, wrapper)


def is_database_error(err: Exception) -> bool:
    # SQLAlchemy is only imported once a command opened the store; if it is not loaded, it did not fail.
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(err, exc.SQLAlchemyError)


pass_app = click.make_pass_decorator(App)


def parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise UsageError(f"invalid date {value!r}: expected YYYY-MM-DD") from err


class RichProgress:
    """A rich progress bar on a terminal; silent otherwise (cron, CI, pipes)."""

    def __init__(self, description: str = "sending") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        console = err_console()
        self.description = description
        self.enabled = console.is_terminal
        self._bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=console, transient=True)
        self._task: Any = None
        self._total: int | None = None

    def start(self, total: int | None) -> None:
        self._total = total
        if self.enabled:
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total)

    def grow(self, n: int) -> None:
        if self._task is not None:
            self._total = (self._total or 0) + n
            self._bar.update(self._task, total=self._total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)

    def stop(self) -> None:
        if self._task is not None:
            self._bar.stop()
