"""The Store's foundation: the engine (SQLite or PostgreSQL), migrations, read-only connections and
database-wide locks. Every part of the Store (``digest.store.store``) builds on it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from digest.config import check_database_url
from digest.errors import ConfigError, StoreError, UsageError
from digest.store.revision import schema_head

__all__ = ["StoreBase", "normalize_url", "schema_head"]

# PostgreSQL advisory lock key held while migrating (any constant no other lock uses; "digest" in ASCII).
_MIGRATION_LOCK = 0x646967657374

# Execution option of a connection that only reads (SQLite then takes no write lock at BEGIN).
_READ_ONLY = "digest_read_only"


def _revision_of(conn: Connection) -> str | None:
    """The schema revision alembic recorded; None in a database it never touched."""
    try:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except SQLAlchemyError:
        return None




def _shown(url: str) -> str:
    """``url`` fit for a message: the password, if any, replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return repr(make_url(url).render_as_string(hide_password=True))
    except Exception:  # an unparseable URL has no password we could find either
        return repr(url.split("@")[-1])


def normalize_url(url: str) -> str:
    """Accept ``sqlite:///x`` and ``postgresql://`` (mapped to the psycopg 3 driver)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class StoreBase:
    """The connection, the schema's migrations and the locks every part of the Store shares."""

    def __init__(self, url: str, *, migrate: bool = True, echo: bool = False) -> None:
        try:
            check_database_url(url)
        except ValueError as err:
            raise ConfigError(str(err), key="database.url") from err
        self.url = normalize_url(url)
        try:
            self.engine: Engine = self._make_engine(self.url, echo)
        except OSError as err:
            # The SQLite file's folder could not be made (read-only, not a folder, no permission).
            raise StoreError(f"cannot create the database folder {err.filename}: {err.strerror}") from err
        except (SQLAlchemyError, ImportError, ValueError) as err:
            raise StoreError(f"cannot open database {_shown(url)}: {err}") from err
        if migrate:
            self.migrate()

    def set_busy_timeout(self, seconds: float) -> None:
        """How long an SQLite statement waits for another process's write lock before failing with
        "database is locked" (default 30 s, right for batch jobs; the web app answers sooner). Applies
        to connections opened from now on (the pool is emptied). No effect on PostgreSQL."""
        if not self.url.startswith("sqlite"):
            return
        millis = max(0, int(seconds * 1000))

        def _busy_timeout(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA busy_timeout={millis}")

        event.listen(self.engine, "connect", _busy_timeout)
        self.engine.dispose()

    @staticmethod
    def _make_engine(url: str, echo: bool) -> Engine:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, echo=echo, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # WAL lets the daemon, the web app and a CLI send share the file; foreign keys are
                # off by default in SQLite.
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn: Connection) -> None:
                # Take the write lock at BEGIN so two senders never both read a row as claimable.
                # Pure reads (``_reading()``) need no lock: WAL gives them a snapshot, and they then
                # neither wait for a sender's writes nor hold them up.
                read_only = conn.get_execution_options().get(_READ_ONLY, False)
                conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

            # pysqlite's own transaction handling would BEGIN lazily; take control of it.
            @event.listens_for(engine, "connect", insert=True)
            def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None

            return engine
        return create_engine(url, echo=echo, pool_pre_ping=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _dialect_insert(self) -> Callable[[Table], Any]:
        """The backend's INSERT with ON CONFLICT (imported here: a short command on SQLite does not
        load the PostgreSQL dialect)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert
        from sqlalchemy.dialects import sqlite

        return sqlite.insert

    def migrate(self) -> None:
        """Apply every pending migration (idempotent; safe to call on each start)."""
        try:
            with self._reading() as conn:
                current = _revision_of(conn)
        except OperationalError as err:
            raise StoreError(f"cannot open database {_shown(self.url)}: {err.orig}") from err
        if current is not None and current == schema_head():
            # Up to date, the usual case: alembic (a third of a short command's start-up) stays unloaded.
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
        from alembic.util.exc import CommandError

        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Senders starting together on a new release would apply the same migration at
                    # once and all but one fail; the others wait here and then find nothing to do.
                    conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except CommandError as err:
            # The database was migrated by a newer digest (or another program): its revision is
            # not among ours, and guessing at its schema could lose data.
            raise StoreError(f"database {_shown(self.url)} is at schema revision {self._stored_revision()!r}, "
                             "which this version of digest does not know (was it upgraded by a newer "
                             "digest?): install that version, or point [database] url elsewhere") from err
        except OperationalError as err:
            raise StoreError(f"cannot open database {_shown(self.url)}: {err.orig}") from err
        except SQLAlchemyError as err:
            raise StoreError(f"migrating {_shown(self.url)} failed: {err}") from err

    def _stored_revision(self) -> str | None:
        """The database's schema revision; None for a new database (no alembic_version table yet)."""
        try:
            with self.engine.connect() as conn:
                return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except SQLAlchemyError:
            return None

    def schema_version(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()

    def _reading(self) -> Connection:
        """A connection for reads only (on SQLite its transactions take no write lock)."""
        return self.engine.connect().execution_options(**{_READ_ONLY: True})

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a database-wide named lock while the block runs; UsageError if another process has it.

        PostgreSQL: a session advisory lock on a connection kept for the block. SQLite: an flock on a
        file beside the database. Used so only one daemon (one scheduler) runs per database.
        """
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha1(f"digest:{name}".encode()).digest()[:8], "big", signed=True)
            with self.engine.connect() as conn:
                if not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar():
                    raise UsageError(f"another digest {name} is already running on this database")
                try:
                    yield
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
            return
        path = self.url.split("///", 1)[1] if "///" in self.url else ""
        if not path or path == ":memory:":
            yield
            return
        import fcntl

        with open(f"{path}.{name}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise UsageError(f"another digest {name} is already running on this database") from err
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
