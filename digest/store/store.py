"""All database I/O: papers and their topics, sources' state, subscribers, issues and deliveries."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib import resources
from itertools import groupby
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from digest.config import check_database_url, parse_hhmm
from digest.errors import ConfigError, StoreError, UsageError
from digest.models import (
    AttemptEnd,
    Delivery,
    DeliveryStatus,
    Frequency,
    Issue,
    IssueEntry,
    IssueSection,
    Paper,
    Subscriber,
    SubscriberStatus,
    TopicAssignment,
    rank_order,
    section_label,
)
from digest.sources.normalize import title_key
from digest.store import schema as t
from digest.store.bounces import BounceStore
from digest.store.feedback import FeedbackStore
from digest.store.jobs import JobStore
from digest.store.records import DeliveryAttention, IssueHistory, IssueListing, SendRun, SourceRecord

if TYPE_CHECKING:
    from sqlalchemy import RowMapping

    # A row read by column name: SQLAlchemy's (whose keys may also be Column objects) or a plain dict.
    _Row = RowMapping | Mapping[str, Any]

log = logging.getLogger("digest.store")

# PostgreSQL advisory lock key held while migrating (any constant no other lock uses; "digest" in ASCII).
_MIGRATION_LOCK = 0x646967657374

# Execution option of a connection that only reads (SQLite then takes no write lock at BEGIN).
_READ_ONLY = "digest_read_only"

# The send loop's two statements (``settle``), in the driver's terms ("?" becomes the driver's mark).
_END_ATTEMPT = (
    "UPDATE deliveries SET status = ?, updated_at = ?, last_error = ?, claimed_by = NULL, lease_until = NULL,"
    " next_attempt_at = ?, sent_at = COALESCE(?, sent_at) WHERE id = ?"
)
_MARK_SENDING = (
    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = ?, updated_at = ?"
    " WHERE id = ? AND claimed_by = ? AND status = 'pending'"
)

# Issues whose papers count as "already received": everything except a permanent failure.
_RECEIVED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)


def _revision_of(conn: Connection) -> str | None:
    """The schema revision alembic recorded; None in a database it never touched."""
    try:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except SQLAlchemyError:
        return None


@lru_cache(maxsize=1)
def schema_head() -> str | None:
    """The newest migration's revision, read from the migration files' ``revision`` and
    ``down_revision`` lines (cheap; a test checks it against alembic's own head). None if the files
    do not form one chain with one head: alembic then decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (resources.files("digest.store") / "migrations" / "versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("_"):
            continue
        text = script.read_text(encoding="utf-8")
        revision = _REVISION.search(text)
        if revision is None:
            return None
        revisions.add(revision[1])
        down = _DOWN_REVISION.search(text)
        parents.update(_PARENTS.findall(down[0]) if down else ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


_REVISION = re.compile(r'^revision\s*(?::\s*str\s*)?=\s*["\']([^"\']+)["\']', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\b.*$", re.MULTILINE)
_PARENTS = re.compile(r'["\']([^"\']+)["\']')


def _now() -> datetime:
    return datetime.now(UTC)


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


class Store(BounceStore, FeedbackStore, JobStore):
    """The project's database. Construct with a SQLAlchemy URL; ``migrate()`` brings the schema up to date.

    Every method is a complete transaction. Datetimes must be aware; they come back in UTC.
    """

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

    # ---- papers ---------------------------------------------------------------------------------

    def upsert_papers(self, papers: Iterable[Paper], now: datetime | None = None) -> tuple[int, int]:
        """Insert new papers and merge known ones; return ``(new, updated)``.

        A paper is known by its id, or by its normalised title when one side has no arXiv id; a paper
        first seen without an id takes the arXiv id when a source reports it (its issues follow). A
        newer arXiv version replaces title and abstract; upvotes, AI fields and links are merged; the
        tagger runs again only when title or abstract changed.
        """
        now = now or _now()
        incoming: dict[str, Paper] = {}
        for paper in papers:
            prev = incoming.get(paper.id)
            incoming[paper.id] = _merge(prev, paper) if prev else paper
        if not incoming:
            return 0, 0
        new = updated = 0
        with self.engine.begin() as conn:
            keys = {title_key(p.title) for p in incoming.values()}
            rows = conn.execute(
                select(t.papers).where(or_(t.papers.c.id.in_(list(incoming)), t.papers.c.title_key.in_(keys)))
            ).mappings().all()
            by_id: dict[str, _Row] = {r["id"]: r for r in rows}
            by_key: dict[str, Any] = {}
            for r in rows:
                by_key.setdefault(r["title_key"], r)
            for paper in incoming.values():
                key = title_key(paper.title)
                row = by_id.get(paper.id)
                if row is None:
                    candidate = by_key.get(key)
                    # Only merge by title across an id-less record; two arXiv ids are two papers.
                    if candidate is not None and (candidate["id"].startswith("title:")
                                                  or paper.id.startswith("title:")):
                        row = candidate
                if row is None:
                    conn.execute(insert(t.papers).values(**_paper_row(paper, key, now)))
                    by_id[paper.id] = {"id": paper.id, "title_key": key}
                    new += 1
                    continue
                old = _row_to_paper(row)
                merged = _merge(old, paper)
                if row["id"].startswith("title:") and not paper.id.startswith("title:"):
                    self._rekey(conn, row["id"], paper.id)
                    merged = replace(merged, id=paper.id)
                elif paper.id.startswith("title:"):
                    merged = replace(merged, id=row["id"])
                values = _paper_row(merged, title_key(merged.title), now)
                values.pop("first_seen")
                if (old.title, old.abstract) != (merged.title, merged.abstract):
                    values["tagged_at"] = None
                else:
                    values.pop("tagged_at")
                if _differs(old, merged):
                    conn.execute(update(t.papers).where(t.papers.c.id == merged.id).values(**values))
                    updated += 1
        return new, updated

    @staticmethod
    def _rekey(conn: Connection, old_id: str, new_id: str) -> None:
        for table in (t.paper_topics, t.issue_papers):
            conn.execute(update(table).where(table.c.paper_id == old_id).values(paper_id=new_id))
        conn.execute(update(t.papers).where(t.papers.c.id == old_id).values(id=new_id))

    def papers_needing_tags(self) -> list[Paper]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.papers).where(t.papers.c.tagged_at.is_(None))).mappings().all()
        return [_row_to_paper(r) for r in rows]

    def mark_all_untagged(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(update(t.papers).values(tagged_at=None)).rowcount

    def save_tags(self, tagged: Iterable[Paper], now: datetime | None = None) -> int:
        """Replace the topics of each given paper with ``paper.topics``; return how many were saved."""
        now = now or _now()
        papers = {p.id: p for p in tagged}  # the last verdict for a paper given twice wins
        if not papers:
            return 0
        ids = list(papers)
        # Statements per batch, not per paper: re-tagging a 100,000-paper store is mostly these writes.
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(delete(t.paper_topics).where(t.paper_topics.c.paper_id.in_(ids[start:start + 500])))
            rows = [{"paper_id": p.id, "topic": a.topic, "score": a.score, "why": list(a.why)}
                    for p in papers.values() for a in p.topics]
            if rows:
                conn.execute(insert(t.paper_topics), rows)
            conn.execute(update(t.papers).where(t.papers.c.id == bindparam("tagged_id")).values(tagged_at=now),
                         [{"tagged_id": i} for i in ids])
        return len(ids)

    def list_papers(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        topic: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[Paper]:
        """Papers first seen in ``[since, until)`` (all when None), with their topics, newest first."""
        query = select(t.papers)
        if since is not None:
            query = query.where(t.papers.c.first_seen >= since)
        if until is not None:
            query = query.where(t.papers.c.first_seen < until)
        if ids is not None:
            query = query.where(t.papers.c.id.in_(list(ids)))
        if topic is not None:
            query = query.where(t.papers.c.id.in_(
                select(t.paper_topics.c.paper_id).where(t.paper_topics.c.topic == topic)))
        query = query.order_by(t.papers.c.first_seen.desc(), t.papers.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            topics = self._topics_for(conn, [r["id"] for r in rows])
        return [_row_to_paper(r, topics.get(r["id"], ())) for r in rows]

    @staticmethod
    def _topics_for(conn: Connection, ids: list[str]) -> dict[str, tuple[TopicAssignment, ...]]:
        out: dict[str, list[TopicAssignment]] = defaultdict(list)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in conn.execute(select(t.paper_topics).where(t.paper_topics.c.paper_id.in_(chunk))):
                out[r.paper_id].append(TopicAssignment(r.topic, r.score, tuple(r.why or ())))
        return {k: tuple(sorted(v, key=lambda a: -a.score)) for k, v in out.items()}

    def count_papers(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.papers)).scalar_one()

    # ---- sources --------------------------------------------------------------------------------

    def source_state(self, source: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.source_state.c.state).where(t.source_state.c.source == source)).first()
        return dict(row.state or {}) if row else {}

    def record_fetch(
        self,
        source: str,
        *,
        ok: bool,
        new: int = 0,
        updated: int = 0,
        error: str | None = None,
        state: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Remember one fetch's outcome; ``state`` replaces the stored state only when ``ok``."""
        now = now or _now()
        with self.engine.begin() as conn:
            exists = conn.execute(select(t.source_state.c.source).where(t.source_state.c.source == source)).first()
            values: dict[str, Any] = {
                "last_fetch_at": now, "last_result": "ok" if ok else "error",
                "last_error": error, "last_new": new, "last_updated": updated,
            }
            if ok:
                values["last_ok_at"] = now
                if state is not None:
                    values["state"] = dict(state)
            if exists:
                conn.execute(update(t.source_state).where(t.source_state.c.source == source).values(**values))
            else:
                values.setdefault("state", dict(state or {}) if ok else {})
                conn.execute(insert(t.source_state).values(source=source, **values))

    def source_records(self) -> list[SourceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.source_state).order_by(t.source_state.c.source)).mappings().all()
        return [SourceRecord(r["source"], dict(r["state"] or {}), r["last_fetch_at"], r["last_ok_at"],
                             r["last_result"], r["last_error"], r["last_new"], r["last_updated"]) for r in rows]

    # ---- subscribers ----------------------------------------------------------------------------

    def add_subscriber(self, sub: Subscriber, now: datetime | None = None) -> Subscriber:
        """Insert a subscriber; UsageError if the address is already there."""
        now = now or _now()
        values = _subscriber_row(sub)
        values.update(created_at=now, updated_at=now,
                      confirmed_at=now if sub.status is SubscriberStatus.CONFIRMED else None)
        try:
            with self.engine.begin() as conn:
                new_id = _new_id(conn.execute(insert(t.subscribers).values(**values)))
        except IntegrityError as err:
            raise UsageError(f"subscriber {sub.email} already exists (use 'subscribers update')") from err
        return replace(sub, id=new_id, created_at=now)

    def add_subscribers(self, subs: Iterable[Subscriber], now: datetime | None = None) -> int:
        """Insert many new subscribers in one transaction (an import, a benchmark's readers); returns
        how many. UsageError, and nothing inserted, if an address is already there."""
        now = now or _now()
        rows = []
        for sub in subs:
            values = _subscriber_row(sub)
            values.update(created_at=now, updated_at=now,
                          confirmed_at=now if sub.status is SubscriberStatus.CONFIRMED else None)
            rows.append(values)
        if not rows:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.subscribers), rows)
        except IntegrityError as err:
            raise UsageError(f"a subscriber is already there: {err.orig}") from err
        return len(rows)

    def subscribers_by_email(self, emails: Sequence[str]) -> dict[str, Subscriber]:
        """The stored subscribers among ``emails`` (lower-case addresses), by address."""
        found: dict[str, Subscriber] = {}
        with self._reading() as conn:
            for chunk in _chunks(emails, 500):
                query = select(t.subscribers).where(t.subscribers.c.email.in_(chunk))
                for r in conn.execute(query).mappings():
                    found[r["email"]] = _row_to_subscriber(r)
        return found

    def import_subscribers(self, new: Sequence[Subscriber], changed: Sequence[Subscriber], chunk: int = 2000,
                           now: datetime | None = None) -> None:
        """Insert ``new`` subscribers and update ``changed`` ones (matched by email; every field of the
        Subscriber written, ``created_at`` and ``confirmed_at`` kept), ``chunk`` rows per transaction so
        a big import never holds the write lock for long. UsageError, and that chunk not written, if a
        new address is already there (another process added it meanwhile)."""
        now = now or _now()
        inserted = [{**_subscriber_row(s), "created_at": now, "updated_at": now,
                     "confirmed_at": now if s.status is SubscriberStatus.CONFIRMED else None} for s in new]
        stmt = (update(t.subscribers).where(t.subscribers.c.email == bindparam("match_email"))
                .values({name: bindparam(f"v_{name}") for name in _SUBSCRIBER_FIELDS} | {"updated_at": now}))
        # (SQLAlchemy reserves a column's own name for its SET value, hence the v_ parameters.)
        updated = [{"match_email": s.email.lower(), **{f"v_{k}": v for k, v in _subscriber_row(s).items()
                                                        if k != "email"}} for s in changed]
        for start in range(0, max(len(inserted), len(updated)), chunk):
            rows_in, rows_up = inserted[start:start + chunk], updated[start:start + chunk]
            try:
                with self.engine.begin() as conn:
                    if rows_in:
                        conn.execute(insert(t.subscribers), rows_in)
                    if rows_up:
                        conn.execute(stmt, rows_up)
            except IntegrityError as err:
                raise UsageError(f"a subscriber was added meanwhile: {err.orig}") from err

    def save_subscriber(self, sub: Subscriber, now: datetime | None = None) -> Subscriber:
        """Update an existing subscriber (matched by email) with every field of ``sub``."""
        now = now or _now()
        values = _subscriber_row(sub)
        values["updated_at"] = now
        with self.engine.begin() as conn:
            row = conn.execute(select(t.subscribers.c.id, t.subscribers.c.confirmed_at)
                               .where(t.subscribers.c.email == sub.email)).first()
            if row is None:
                raise UsageError(f"no subscriber {sub.email}")
            if sub.status is SubscriberStatus.CONFIRMED and row.confirmed_at is None:
                values["confirmed_at"] = now
            conn.execute(update(t.subscribers).where(t.subscribers.c.id == row.id).values(**values))
        return replace(sub, id=row.id)

    def remove_subscriber(self, email: str) -> bool:
        with self.engine.begin() as conn:
            sub_id = conn.execute(select(t.subscribers.c.id).where(t.subscribers.c.email == email)).scalar()
            if sub_id is None:
                return False
            issue_ids = select(t.issues.c.id).where(t.issues.c.subscriber_id == sub_id)
            conn.execute(delete(t.deliveries).where(t.deliveries.c.subscriber_id == sub_id))
            conn.execute(delete(t.feedback).where(t.feedback.c.subscriber_id == sub_id))
            conn.execute(delete(t.issue_papers).where(t.issue_papers.c.issue_id.in_(issue_ids)))
            conn.execute(delete(t.issues).where(t.issues.c.subscriber_id == sub_id))
            conn.execute(delete(t.subscribers).where(t.subscribers.c.id == sub_id))
        return True

    def get_subscriber(self, email: str) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.subscribers).where(t.subscribers.c.email == email.lower())).mappings().first()
        return _row_to_subscriber(row) if row else None

    def get_subscriber_by_id(self, sub_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.subscribers).where(t.subscribers.c.id == sub_id)).mappings().first()
        return _row_to_subscriber(row) if row else None

    def list_subscribers(self, status: SubscriberStatus | None = None) -> list[Subscriber]:
        return list(self.iter_subscribers(status=status))

    def iter_subscribers(
        self, status: SubscriberStatus | None = None, batch_size: int = 500
    ) -> Iterator[Subscriber]:
        """All subscribers (optionally of one status) by id, fetched in batches so memory stays flat."""
        last_id = 0
        while True:
            query = select(t.subscribers).where(t.subscribers.c.id > last_id)
            if status is not None:
                query = query.where(t.subscribers.c.status == status.value)
            query = query.order_by(t.subscribers.c.id).limit(batch_size)
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            if not rows:
                return
            for row in rows:
                yield _row_to_subscriber(row)
            last_id = rows[-1]["id"]

    def count_subscribers(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.subscribers.c.status, func.count()).group_by(t.subscribers.c.status))
            return {r[0]: r[1] for r in rows}

    def set_subscriber_status(self, email: str, status: SubscriberStatus, now: datetime | None = None,
                              reason: str | None = None) -> bool:
        now = now or _now()
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "status_changed_at": now,
                                  "status_reason": reason}
        if status is SubscriberStatus.CONFIRMED:
            values["confirmed_at"] = now
        with self.engine.begin() as conn:
            return conn.execute(update(t.subscribers).where(t.subscribers.c.email == email.lower())
                                .values(**values)).rowcount > 0

    def record_hard_bounce(self, subscriber_id: int, threshold: int, reason: str = "") -> bool:
        """Count one hard bounce; suppress the subscriber at ``threshold``. Returns True if suppressed.

        ``reason`` (the server's reply) is kept as the subscriber's latest bounce and, when it
        suppresses them, as the reason for their status."""
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(update(t.subscribers).where(t.subscribers.c.id == subscriber_id)
                         .values(hard_bounces=t.subscribers.c.hard_bounces + 1, last_bounce_at=now,
                                 last_bounce_kind="hard", last_bounce_status=_enhanced_status(reason),
                                 last_bounce_diagnostic=reason[:2000]))
            bounces = conn.execute(select(t.subscribers.c.hard_bounces)
                                   .where(t.subscribers.c.id == subscriber_id)).scalar_one()
            if bounces >= threshold:
                conn.execute(update(t.subscribers).where(t.subscribers.c.id == subscriber_id)
                             .values(status=SubscriberStatus.SUPPRESSED.value, updated_at=now, status_changed_at=now,
                                     status_reason=f"hard bounce (smtp): {reason}"[:500]))
                return True
        return False

    # ---- issues ---------------------------------------------------------------------------------

    def received_paper_ids(self, subscriber_id: int, exclude_date: date | None = None) -> set[str]:
        """Every paper in an issue already sent (or on its way) to this subscriber."""
        query = (
            select(t.issue_papers.c.paper_id)
            .join(t.issues, t.issues.c.id == t.issue_papers.c.issue_id)
            .join(t.deliveries, t.deliveries.c.issue_id == t.issues.c.id)
            .where(t.issues.c.subscriber_id == subscriber_id,
                   t.deliveries.c.status.in_([s.value for s in _RECEIVED]))
        )
        if exclude_date is not None:
            query = query.where(t.issues.c.issue_date != exclude_date)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def last_issue_time(self, subscriber_id: int, before: date) -> datetime | None:
        """When this subscriber's latest earlier issue was built (None if they never had one)."""
        query = (select(func.max(t.issues.c.created_at))
                 .where(t.issues.c.subscriber_id == subscriber_id, t.issues.c.issue_date < before))
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @contextmanager
    def building(self, issue_date: date, chunk: int) -> Iterator[bool]:
        """Hold the right to build chunk ``chunk`` of ``issue_date``'s issues; yields False if taken.

        Only saves work (``create_issue`` stays idempotent whoever builds): on PostgreSQL it is a
        session advisory lock, so senders running at once split the building instead of all selecting
        the same issues; it ends with the block, or with the session if the sender dies. SQLite takes
        one writer at a time anyway, so there every caller gets True.
        """
        if self.dialect != "postgresql":
            yield True
            return
        key = (issue_date.toordinal(), chunk)
        with self.engine.connect() as conn:
            ours = bool(conn.execute(select(func.pg_try_advisory_lock(*key))).scalar())
            conn.commit()  # the lock is the session's: no transaction stays open while building
            try:
                yield ours
            finally:
                if ours:
                    conn.execute(select(func.pg_advisory_unlock(*key)))
                    conn.commit()

    def issue_id_for(self, subscriber_id: int, issue_date: date) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.issues.c.id).where(
                t.issues.c.subscriber_id == subscriber_id, t.issues.c.issue_date == issue_date)).scalar()

    def create_issue(
        self, issue: Issue, subject: str, message_id: Callable[[int], str], now: datetime | None = None
    ) -> int:
        """Store an issue, its papers and a pending delivery record in one transaction.

        Idempotent: if this subscriber already has an issue for that date, its id is returned and
        nothing is written (two senders racing to build the same issue end with one).
        """
        now = now or _now()
        if issue.subscriber.id is None:
            raise StoreError("create_issue needs a stored subscriber")
        # ON CONFLICT DO NOTHING, not a caught IntegrityError: racing senders then cost PostgreSQL no
        # aborted transaction and its log no "duplicate key" ERROR per subscriber. A loser waits for
        # the winner's commit and then reads the winner's id.
        dialect_insert = self._dialect_insert()
        head = dialect_insert(t.issues).values(
            subscriber_id=issue.subscriber.id, issue_date=issue.date, created_at=now,
            subject=subject, paper_count=issue.count,
        ).on_conflict_do_nothing(index_elements=["subscriber_id", "issue_date"]).returning(t.issues.c.id)
        try:
            with self.engine.begin() as conn:
                issue_id: int | None = conn.execute(head).scalar()
                if issue_id is None:
                    stored: int = conn.execute(select(t.issues.c.id).where(
                        t.issues.c.subscriber_id == issue.subscriber.id,
                        t.issues.c.issue_date == issue.date)).scalar_one()
                    return stored
                rows = [
                    {"issue_id": issue_id, "paper_id": e.paper.id, "position": pos, "section": s.topic,
                     "reason": e.reason, "score": e.score}
                    for pos, (s, e) in enumerate((s, e) for s in issue.sections for e in s.entries)
                ]
                if rows:
                    conn.execute(insert(t.issue_papers), rows)
                conn.execute(insert(t.deliveries).values(
                    issue_id=issue_id, subscriber_id=issue.subscriber.id, issue_date=issue.date,
                    status=DeliveryStatus.PENDING.value, message_id=message_id(issue_id),
                    attempts=0, in_doubt=False, created_at=now, updated_at=now,
                    due_at=issue.subscriber.send_moment(issue.date), day_ends_at=issue.subscriber.day_end(issue.date),
                ))
        except IntegrityError:
            existing = self.issue_id_for(issue.subscriber.id, issue.date)
            if existing is None:
                raise
            return existing
        return issue_id

    def load_issue(self, issue_id: int, labels: Mapping[str, str]) -> Issue | None:
        """Rebuild a stored issue exactly as it was built (same papers, order, reasons)."""
        return self.load_issues([issue_id], labels).get(issue_id)

    def load_issues(
        self, issue_ids: Sequence[int], labels: Mapping[str, str], papers: dict[str, Paper] | None = None
    ) -> dict[int, Issue]:
        """Many stored issues by id, each exactly as ``load_issue`` rebuilds it, in a few queries.

        ``papers`` is a cache the caller keeps (paper id -> Paper with its topics): papers found there
        are not read again and papers read are added, so issues loaded together or one batch after the
        other share their Paper objects (the renderer then reuses what it made of each paper). Ids
        that are not stored are left out.
        """
        cache = papers if papers is not None else {}
        heads: dict[int, _Row] = {}
        subscribers: dict[int, Subscriber] = {}
        entries: dict[int, list[_Row]] = defaultdict(list)
        with self._reading() as conn:
            for chunk in _chunks(list(dict.fromkeys(issue_ids))):
                for row in conn.execute(select(t.issues).where(t.issues.c.id.in_(chunk))).mappings():
                    heads[row["id"]] = row
                for row in conn.execute(select(t.issue_papers).where(t.issue_papers.c.issue_id.in_(chunk))
                                        .order_by(t.issue_papers.c.issue_id, t.issue_papers.c.position)
                                        ).mappings():
                    entries[row["issue_id"]].append(row)
            wanted = sorted({h["subscriber_id"] for h in heads.values()})
            for chunk in _chunks(wanted):
                for row in conn.execute(select(t.subscribers).where(t.subscribers.c.id.in_(chunk))).mappings():
                    subscribers[row["id"]] = _row_to_subscriber(row)
            missing = sorted({e["paper_id"] for es in entries.values() for e in es} - cache.keys())
            for chunk in _chunks(missing):
                rows = conn.execute(select(t.papers).where(t.papers.c.id.in_(chunk))).mappings().all()
                topics = self._topics_for(conn, [r["id"] for r in rows])
                for r in rows:
                    cache[r["id"]] = _row_to_paper(r, topics.get(r["id"], ()))
        issues: dict[int, Issue] = {}
        for issue_id, head in heads.items():
            sub = subscribers.get(head["subscriber_id"])
            if sub is None:
                continue
            sections: dict[str, list[IssueEntry]] = {}
            for e in entries.get(issue_id, ()):
                paper = cache.get(e["paper_id"])
                if paper is not None:
                    sections.setdefault(e["section"], []).append(IssueEntry(paper, e["reason"], e["score"]))
            built = tuple(IssueSection(name, section_label(name, labels), tuple(es))
                          for name, es in sections.items())
            # The selection's top pick: the entry that ranks first.
            top = min((e for s in built for e in s.entries), key=lambda e: rank_order(e.score, e.paper.id),
                      default=None)
            issues[issue_id] = Issue(subscriber=sub, date=head["issue_date"], sections=built, top_pick=top,
                                     id=issue_id, created_at=head["created_at"])
        return issues

    def issue_histories(
        self, subscriber_ids: Sequence[int], issue_date: date, papers_since: datetime | None = None
    ) -> dict[int, IssueHistory]:
        """What building each subscriber's issue for ``issue_date`` needs, in three queries for them all.

        Per subscriber id (every one asked for is in the result): the issue already built for that date
        and its delivery status; the papers received in other issues (as ``received_paper_ids`` with
        ``exclude_date=issue_date``); when their latest issue before that date was built (as
        ``last_issue_time``). With ``papers_since``, only papers first seen since then count as
        received (issues built more than two days before it are not read): all that a selection among
        such papers needs, and a year of issues is not read again every day.
        """
        found: dict[int, tuple[int, DeliveryStatus | None]] = {}
        received: dict[int, set[str]] = defaultdict(set)
        last: dict[int, datetime] = {}
        i, ip, d = t.issues.c, t.issue_papers.c, t.deliveries.c
        with self._reading() as conn:
            for chunk in _chunks(sorted(set(subscriber_ids))):
                query = (select(i.subscriber_id, i.id, d.status)
                         .select_from(t.issues.outerjoin(t.deliveries, d.issue_id == i.id))
                         .where(i.issue_date == issue_date, i.subscriber_id.in_(chunk)))
                for sub_id, issue_id, status in conn.execute(query):
                    found[sub_id] = (issue_id, DeliveryStatus(status) if status is not None else None)
                papers = (select(i.subscriber_id, ip.paper_id)
                         .select_from(t.issue_papers.join(t.issues, i.id == ip.issue_id)
                                      .join(t.deliveries, d.issue_id == i.id))
                         .where(i.subscriber_id.in_(chunk), i.issue_date != issue_date,
                                d.status.in_([s.value for s in _RECEIVED])))
                if papers_since is not None:
                    papers = papers.where(i.created_at >= papers_since - timedelta(days=2))
                for sub_id, paper_id in conn.execute(papers):
                    received[sub_id].add(paper_id)
                latest = (select(i.subscriber_id, func.max(i.created_at))
                          .where(i.subscriber_id.in_(chunk), i.issue_date < issue_date).group_by(i.subscriber_id))
                for sub_id, value in conn.execute(latest):
                    if value is not None:
                        last[sub_id] = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        histories = {}
        for sub_id in subscriber_ids:
            issue_id, status = found.get(sub_id, (None, None))
            histories[sub_id] = IssueHistory(issue_id, status, frozenset(received.get(sub_id, ())),
                                             last.get(sub_id))
        return histories

    def create_issues(
        self, issues: Sequence[Issue], message_id: Callable[[int, Subscriber], str], now: datetime | None = None,
        subject: Callable[[Issue], str] = lambda issue: "",
    ) -> int:
        """Store many issues, each with its papers and a pending delivery record, in one transaction:
        ``create_issue`` for a batch, as idempotent (a subscriber who already has an issue for its date
        keeps that one and nothing is written for them). ``message_id(issue_id, subscriber)`` names
        each delivery's message, ``subject(issue)`` gives the subject kept with the issue. Returns how
        many issues were written.
        """
        now = now or _now()
        if any(issue.subscriber.id is None for issue in issues):
            raise StoreError("create_issues needs stored subscribers")
        # Ascending subscriber ids in every sender: two senders inserting overlapping batches on
        # PostgreSQL wait for each other in one order only, so they never deadlock.
        ordered = sorted(issues, key=lambda issue: (issue.date, issue.subscriber.id or 0))
        head_sql, head_processors = self._bulk_insert(t.issues, _ISSUE_COLUMNS)
        written = 0
        with self.engine.begin() as conn:
            for _, same_day in groupby(ordered, key=lambda issue: issue.date):
                for chunk in _chunks(list(same_day), 100):
                    written += self._insert_issues(conn, chunk, head_sql, head_processors, message_id, subject, now)
        return written

    def _insert_issues(self, conn: Connection, chunk: Sequence[Issue], head_sql: str, head_processors: tuple[Any, ...],
                       message_id: Callable[[int, Subscriber], str], subject: Callable[[Issue], str],
                       now: datetime) -> int:
        """One statement for up to 100 issues of one date (ON CONFLICT DO NOTHING: who has one keeps
        it, and racing senders cost PostgreSQL no aborted transaction), then their papers and
        delivery records for the issues it wrote."""
        by_subscriber = {issue.subscriber.id: issue for issue in chunk}
        values, rows = head_sql.split(" VALUES ", 1)
        sql = (f"{values} VALUES {', '.join([rows] * len(chunk))}"
               " ON CONFLICT (subscriber_id, issue_date) DO NOTHING RETURNING id, subscriber_id")
        params = tuple(value for issue in chunk for value in _processed(
            (issue.subscriber.id, issue.date, now, subject(issue), issue.count), head_processors))
        papers: list[tuple[Any, ...]] = []
        deliveries: list[tuple[Any, ...]] = []
        for issue_id, sub_id in conn.exec_driver_sql(sql, params).all():
            issue = by_subscriber[sub_id]
            papers += [
                (issue_id, e.paper.id, pos, s.topic, e.reason, e.score)
                for pos, (s, e) in enumerate((s, e) for s in issue.sections for e in s.entries)
            ]
            sub = issue.subscriber
            deliveries.append((issue_id, sub_id, issue.date, DeliveryStatus.PENDING.value, message_id(issue_id, sub), 0,
                               False, now, now, sub.send_moment(issue.date), sub.day_end(issue.date)))
        for (insert_sql, processors), batch in ((self._bulk_insert(t.issue_papers, _ISSUE_PAPER_COLUMNS), papers),
                                                (self._bulk_insert(t.deliveries, _DELIVERY_COLUMNS), deliveries)):
            if batch:
                conn.exec_driver_sql(insert_sql, [_processed(row, processors) for row in batch])
        return len(deliveries)

    def _bulk_insert(self, table: Table, columns: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """An INSERT of ``columns`` in the driver's own parameter style, with each column's bind processor
        (None where the driver takes the value as it is): for executemany over thousands of plain rows,
        which the expression layer would otherwise process one by one."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        return sql, tuple(table.c[name].type.bind_processor(self.engine.dialect) for name in columns)

    def find_issue(self, subscriber_id: int, issue_date: date, labels: Mapping[str, str]) -> Issue | None:
        issue_id = self.issue_id_for(subscriber_id, issue_date)
        return self.load_issue(issue_id, labels) if issue_id is not None else None

    def list_issues(self, limit: int = 100) -> list[IssueListing]:
        """Recent issues with their delivery status, newest first."""
        query = (select(t.issues.c.id, t.issues.c.issue_date, t.issues.c.subject, t.issues.c.paper_count,
                        t.issues.c.subscriber_id, t.deliveries.c.status, t.deliveries.c.sent_at)
                 .join(t.deliveries, t.deliveries.c.issue_id == t.issues.c.id)
                 .order_by(t.issues.c.issue_date.desc(), t.issues.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [IssueListing(id=r.id, issue_date=r.issue_date, subject=r.subject, paper_count=r.paper_count,
                                 subscriber_id=r.subscriber_id, status=DeliveryStatus(r.status), sent_at=r.sent_at)
                    for r in conn.execute(query)]

    # ---- deliveries -----------------------------------------------------------------------------

    def recover_interrupted(self, now: datetime, resend_in_doubt: bool) -> int:
        """Deal with records a killed sender left in "sending" once their lease has expired.

        Such a message may or may not have reached the server. With ``resend_in_doubt`` it goes back to
        pending (flagged ``in_doubt``; it is re-sent with the same Message-ID so the receiver can drop
        a duplicate), else it becomes "unknown". Returns how many records were recovered.
        """
        stale = and_(t.deliveries.c.status == DeliveryStatus.SENDING.value,
                     or_(t.deliveries.c.lease_until.is_(None), t.deliveries.c.lease_until < now))
        target = DeliveryStatus.PENDING if resend_in_doubt else DeliveryStatus.UNKNOWN
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Senders starting together all recover: each takes the rows no other holds, in id
                # order, so two of them never wait on each other (a multi-row UPDATE could deadlock).
                ids = list(conn.execute(select(t.deliveries.c.id).where(stale).order_by(t.deliveries.c.id)
                                        .with_for_update(skip_locked=True)).scalars())
                if not ids:
                    return 0
                stale = and_(stale, t.deliveries.c.id.in_(ids))
            return conn.execute(update(t.deliveries).where(stale).values(
                status=target.value, in_doubt=True, claimed_by=None, lease_until=None, updated_at=now,
                last_error="interrupted while sending: outcome unknown",
            )).rowcount

    def claim_deliveries(
        self,
        worker: str,
        now: datetime,
        lease_seconds: float,
        limit: int,
        issue_date: date | None = None,
        subscriber_id: int | None = None,
        due_since: datetime | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` pending deliveries that are due, for this worker alone.

        With ``due_since``, only records whose reader's send moment is not before it and whose
        reader's day is not over yet (the daemon's lateness rules; records written before they were
        kept qualify). On PostgreSQL rows are picked with ``FOR UPDATE SKIP LOCKED`` so any number of
        senders can claim at once; on SQLite the write lock taken at BEGIN serialises claimers. A lease
        that expires (its sender died) makes the rows claimable again.
        """
        c = t.deliveries.c
        claimable = and_(
            c.status == DeliveryStatus.PENDING.value,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
            or_(c.claimed_by.is_(None), c.lease_until < now),
        )
        if due_since is not None:
            claimable = and_(claimable, or_(c.due_at.is_(None), c.due_at >= due_since),
                             or_(c.day_ends_at.is_(None), c.day_ends_at > now))
        query = select(c.id).where(claimable)
        if issue_date is not None:
            query = query.where(c.issue_date == issue_date)
        if subscriber_id is not None:
            query = query.where(c.subscriber_id == subscriber_id)
        query = query.order_by(c.id).limit(limit)
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        lease = now + timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(update(t.deliveries).where(c.id.in_(ids), claimable)
                         .values(claimed_by=worker, lease_until=lease, updated_at=now))
            rows = conn.execute(select(t.deliveries).where(c.id.in_(ids), c.claimed_by == worker)
                                .order_by(c.id)).mappings().all()
        return [_row_to_delivery(r) for r in rows]

    def release_claims(self, worker: str) -> int:
        """Give back this worker's unsent claims (clean shutdown)."""
        c = t.deliveries.c
        with self.engine.begin() as conn:
            return conn.execute(update(t.deliveries).where(
                c.claimed_by == worker, c.status == DeliveryStatus.PENDING.value
            ).values(claimed_by=None, lease_until=None)).rowcount

    def claimants(self) -> set[str]:
        """Every worker holding a pending or sending record (to spot senders that died)."""
        c = t.deliveries.c
        query = select(c.claimed_by).distinct().where(
            c.claimed_by.is_not(None),
            c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def expire_claims(self, workers: Iterable[str], now: datetime) -> int:
        """End the leases of ``workers``, known to be dead, at once: their pending claims become
        claimable and their "sending" records recoverable by ``recover_interrupted(now)``."""
        names = list(workers)
        if not names:
            return 0
        c = t.deliveries.c
        with self.engine.begin() as conn:
            return conn.execute(update(t.deliveries).where(
                c.claimed_by.in_(names),
                c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]),
            ).values(lease_until=now - timedelta(seconds=1))).rowcount

    def mark_sending(self, delivery_id: int, worker: str, now: datetime, lease_seconds: float) -> bool:
        """Record that the message is about to be handed over; False if the claim was lost."""
        c = t.deliveries.c
        with self.engine.begin() as conn:
            return conn.execute(update(t.deliveries).where(
                c.id == delivery_id, c.claimed_by == worker, c.status == DeliveryStatus.PENDING.value
            ).values(status=DeliveryStatus.SENDING.value, attempts=c.attempts + 1,
                     lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)).rowcount == 1

    def mark_outcome(
        self,
        delivery_id: int,
        status: DeliveryStatus,
        now: datetime,
        detail: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Record the end of one attempt: sent, failed, unknown, or pending again (retry later)."""
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "last_error": detail,
                                  "claimed_by": None, "lease_until": None, "next_attempt_at": next_attempt_at}
        if status is DeliveryStatus.SENT:
            values["sent_at"] = now
        with self.engine.begin() as conn:
            conn.execute(update(t.deliveries).where(t.deliveries.c.id == delivery_id).values(**values))

    def settle(
        self, ended: Sequence[AttemptEnd], sending: Sequence[int], worker: str, now: datetime, lease_seconds: float
    ) -> set[int]:
        """In one transaction: record the ``ended`` attempts (as ``mark_outcome`` does) and mark the
        ``sending`` deliveries as about to be handed over (as ``mark_sending`` does). Returns the ids
        marked: those still claimed by ``worker`` and pending.

        The send loop calls it each time a message comes back from the mailer, with the next one it is
        about to hand over, so no more records are "sending" than messages are in flight, at a cost of
        one commit per message. See ``settling`` for many calls from one thread.
        """
        with self.settling(worker, lease_seconds) as settle:
            return settle(ended, sending, now)

    @contextmanager
    def settling(self, worker: str, lease_seconds: float) -> Iterator[Callable[..., set[int]]]:
        """``settle(ended, sending, now)`` for one thread's many calls, on a database connection kept for
        the block: the two UPDATEs run once or twice per message, and a pooled connection, a
        transaction object and the expression layer per call would cost more than they do."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        end_sql, mark_sql = _END_ATTEMPT.replace("?", mark), _MARK_SENDING.replace("?", mark)
        to_db = t.UTCDateTime().bind_processor(self.engine.dialect) or (lambda value: value)
        sqlite = self.dialect == "sqlite"
        raw = self.engine.raw_connection()

        def settle(ended: Sequence[AttemptEnd], sending: Sequence[int], now: datetime) -> set[int]:
            at, lease = to_db(now), to_db(now + timedelta(seconds=lease_seconds))
            marked: set[int] = set()
            cursor = raw.cursor()
            try:
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")  # as every write here: the lock first
                for e in ended:
                    cursor.execute(end_sql, (
                        e.status.value, at, e.detail, to_db(e.next_attempt_at) if e.next_attempt_at else None,
                        at if e.status is DeliveryStatus.SENT else None, e.delivery_id))
                for delivery_id in dict.fromkeys(sending):
                    cursor.execute(mark_sql, (lease, at, delivery_id, worker))
                    if cursor.rowcount == 1:
                        marked.add(delivery_id)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()
            return marked

        try:
            yield settle
        finally:
            raw.close()  # back to the pool

    def requeue_unknown(self, issue_date: date | None = None) -> int:
        """Put "unknown" deliveries back to pending (an operator's explicit decision to resend)."""
        c = t.deliveries.c
        query = update(t.deliveries).where(c.status == DeliveryStatus.UNKNOWN.value)
        if issue_date is not None:
            query = query.where(c.issue_date == issue_date)
        with self.engine.begin() as conn:
            return conn.execute(query.values(status=DeliveryStatus.PENDING.value, next_attempt_at=None,
                                             in_doubt=True)).rowcount

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.deliveries).where(t.deliveries.c.id == delivery_id)).mappings().first()
        return _row_to_delivery(row) if row else None

    def delivery_for_issue(self, issue_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.deliveries).where(t.deliveries.c.issue_id == issue_id)).mappings().first()
        return _row_to_delivery(row) if row else None

    def deliveries_on(self, issue_dates: Iterable[date]) -> dict[tuple[int, date], Delivery]:
        """Every delivery record of an issue dated one of ``issue_dates``, by (subscriber id, date).

        One query for the daemon's dispatch, which checks every subscriber every few minutes.
        """
        dates = sorted(set(issue_dates))
        if not dates:
            return {}
        c = t.deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.deliveries).where(c.issue_date.in_(dates))).mappings().all()
        return {(r["subscriber_id"], r["issue_date"]): _row_to_delivery(r) for r in rows}

    def delivery_counts(self, issue_date: date | None = None) -> dict[str, int]:
        c = t.deliveries.c
        query = select(c.status, func.count()).group_by(c.status)
        if issue_date is not None:
            query = query.where(c.issue_date == issue_date)
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(query)}

    def delivery_issue_ids(self) -> list[int]:
        """The issue of every delivery record, in the order the records were made."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.deliveries.c.issue_id).order_by(t.deliveries.c.id)).scalars())

    def deliveries_needing_attention(self, limit: int = 20) -> list[DeliveryAttention]:
        c = t.deliveries.c
        query = (select(c.id, c.issue_date, c.status, c.attempts, c.last_error, t.subscribers.c.email)
                 .join(t.subscribers, t.subscribers.c.id == c.subscriber_id)
                 .where(or_(c.status.in_([DeliveryStatus.FAILED.value, DeliveryStatus.UNKNOWN.value]),
                            and_(c.status == DeliveryStatus.PENDING.value, c.attempts > 0)))
                 .order_by(c.updated_at.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [DeliveryAttention(id=r.id, issue_date=r.issue_date, status=DeliveryStatus(r.status),
                                      attempts=r.attempts, last_error=r.last_error, email=r.email)
                    for r in conn.execute(query)]

    # ---- send runs ------------------------------------------------------------------------------

    def start_send_run(self, issue_date: date, now: datetime, dry_run: bool = False) -> int:
        with self.engine.begin() as conn:
            return _new_id(conn.execute(insert(t.send_runs).values(
                issue_date=issue_date, started_at=now, sent=0, skipped=0, failed=0, dry_run=dry_run,
            )))

    def finish_send_run(self, run_id: int, now: datetime, sent: int, skipped: int, failed: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.send_runs).where(t.send_runs.c.id == run_id).values(
                finished_at=now, sent=sent, skipped=skipped, failed=failed))

    def last_send_run(self) -> SendRun | None:
        query = (select(t.send_runs).where(t.send_runs.c.dry_run.is_(False))
                 .order_by(t.send_runs.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            r = conn.execute(query).mappings().first()
        if r is None:
            return None
        return SendRun(r["id"], r["issue_date"], r["started_at"], r["finished_at"], r["sent"], r["skipped"],
                       r["failed"])

    # ---- installation secrets -------------------------------------------------------------------

    def installation_secret(self, name: str) -> str | None:
        """The stored value of the installation secret ``name``, or None if there is none yet."""
        query = select(t.installation_secrets.c.value).where(t.installation_secrets.c.name == name)
        with self._reading() as conn:
            value: str | None = conn.execute(query).scalar_one_or_none()
        return value

    def ensure_installation_secret(self, name: str, make: Callable[[], str], now: datetime | None = None) -> str:
        """The value of ``name``; if there is none, ``make()`` one and store it first.

        Processes starting together on a fresh database may each make a value: only the first stored
        one is kept (insert-or-ignore), and every caller returns that one.
        """
        existing = self.installation_secret(name)
        if existing is not None:
            return existing
        dialect_insert = self._dialect_insert()
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(t.installation_secrets)
                         .values(name=name, value=make(), created_at=now or _now())
                         .on_conflict_do_nothing(index_elements=["name"]))
        stored = self.installation_secret(name)
        if stored is None:  # pragma: no cover - the row was just written in a committed transaction
            raise StoreError(f"installation secret {name!r} could not be stored")
        return stored

    def rotate_installation_secret(self, name: str, value: str, previous: str, keep: bool,
                                   now: datetime | None = None) -> bool:
        """Store ``value`` as ``name`` in one transaction. With ``keep`` the value it replaces is kept
        under the name ``previous``; either way what ``previous`` held before is dropped. Returns
        whether there was a value to replace."""
        now = now or _now()
        table = t.installation_secrets
        with self.engine.begin() as conn:
            old = conn.execute(select(table.c.value).where(table.c.name == name)).scalar_one_or_none()
            conn.execute(delete(table).where(table.c.name.in_([name, previous])))
            if keep and old is not None:
                conn.execute(insert(table).values(name=previous, value=old, created_at=now))
            conn.execute(insert(table).values(name=name, value=value, created_at=now))
        return old is not None

    def drop_installation_secret(self, name: str) -> bool:
        """Delete the installation secret ``name``; returns whether there was one."""
        with self.engine.begin() as conn:
            table = t.installation_secrets
            return conn.execute(delete(table).where(table.c.name == name)).rowcount > 0


# ---- row <-> model ------------------------------------------------------------------------------

_ISSUE_COLUMNS = ("subscriber_id", "issue_date", "created_at", "subject", "paper_count")
_ISSUE_PAPER_COLUMNS = ("issue_id", "paper_id", "position", "section", "reason", "score")
_DELIVERY_COLUMNS = ("issue_id", "subscriber_id", "issue_date", "status", "message_id", "attempts", "in_doubt",
                     "created_at", "updated_at", "due_at", "day_ends_at")


def _enhanced_status(reply: str) -> str | None:
    """The RFC 3463 status in an SMTP reply (``550 5.1.1 ...`` -> ``5.1.1``), if it has one."""
    found = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", reply)
    return found.group(1) if found else None


def _processed(row: tuple[Any, ...], processors: tuple[Any, ...]) -> tuple[Any, ...]:
    if not any(processors):
        return row
    return tuple(value if process is None or value is None else process(value)
                 for value, process in zip(row, processors, strict=True))


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``: IN lists and multi-row VALUES stay within every backend's limits."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _union(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def _merge(old: Paper, new: Paper) -> Paper:
    """Fold what ``new`` reports into ``old``: the newest arXiv version's text wins, fields accumulate."""
    newer = new.version is not None and (old.version is None or new.version > old.version)
    take_text = newer or not old.abstract
    return replace(
        old,
        title=new.title if (take_text and new.title) else old.title,
        abstract=new.abstract if (take_text and new.abstract) else old.abstract,
        version=max(v for v in (old.version, new.version, 0) if v is not None) or None,
        authors=old.authors or new.authors,
        published=old.published or new.published,
        url=old.url or new.url,
        pdf_url=old.pdf_url or new.pdf_url,
        code_url=old.code_url or new.code_url,
        project_url=old.project_url or new.project_url,
        upvotes=new.upvotes if new.upvotes is not None else old.upvotes,
        ai_summary=new.ai_summary or old.ai_summary,
        ai_keywords=_union(old.ai_keywords, new.ai_keywords),
        categories=_union(old.categories, new.categories),
        sources=_union(old.sources, new.sources),
    )


def _differs(a: Paper, b: Paper) -> bool:
    return replace(a, topics=(), first_seen=None) != replace(b, topics=(), first_seen=None)


def _paper_row(p: Paper, key: str, now: datetime) -> dict[str, Any]:
    return {
        "id": p.id, "title": p.title, "title_key": key, "abstract": p.abstract, "authors": list(p.authors),
        "published": p.published, "version": p.version, "url": p.url, "pdf_url": p.pdf_url,
        "code_url": p.code_url, "project_url": p.project_url, "upvotes": p.upvotes,
        "ai_summary": p.ai_summary, "ai_keywords": list(p.ai_keywords), "categories": list(p.categories),
        "sources": list(p.sources), "first_seen": p.first_seen or now, "updated_at": now, "tagged_at": None,
    }


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key of the one row an INSERT added."""
    key = result.inserted_primary_key
    if key is None:  # only for executemany, which these INSERTs never are
        raise StoreError("the database returned no id for a new row")
    new_id: int = key[0]
    return new_id


def _row_to_paper(r: _Row, topics: tuple[TopicAssignment, ...] = ()) -> Paper:
    return Paper(
        id=r["id"], title=r["title"], abstract=r["abstract"] or "", authors=tuple(r["authors"] or ()),
        published=r["published"], version=r["version"], url=r["url"], pdf_url=r["pdf_url"],
        code_url=r["code_url"], project_url=r["project_url"], upvotes=r["upvotes"],
        ai_summary=r["ai_summary"], ai_keywords=tuple(r["ai_keywords"] or ()),
        categories=tuple(r["categories"] or ()), sources=tuple(r["sources"] or ()),
        first_seen=r["first_seen"], topics=topics,
    )


# The columns _subscriber_row writes except the address (an import updates by address).
_SUBSCRIBER_FIELDS = ("name", "topics", "keywords", "exclude", "authors", "frequency", "send_at", "tz",
                      "max_papers", "send_empty", "weekday", "status", "paused")


def _subscriber_row(s: Subscriber) -> dict[str, Any]:
    return {
        "email": s.email.lower(), "name": s.name, "topics": list(s.topics), "keywords": list(s.keywords),
        "exclude": list(s.exclude), "authors": list(s.authors), "frequency": s.frequency.value,
        "send_at": s.send_at.strftime("%H:%M"), "tz": s.tz, "max_papers": s.max_papers,
        "send_empty": s.send_empty, "weekday": s.weekday, "status": s.status.value, "paused": s.paused,
    }


def _row_to_subscriber(r: _Row) -> Subscriber:
    return Subscriber(
        email=r["email"], name=r["name"] or "", topics=tuple(r["topics"] or ()),
        keywords=tuple(r["keywords"] or ()), exclude=tuple(r["exclude"] or ()),
        authors=tuple(r["authors"] or ()), frequency=Frequency(r["frequency"]),
        send_at=parse_hhmm(r["send_at"]), tz=r["tz"], max_papers=r["max_papers"],
        send_empty=bool(r["send_empty"]), weekday=r["weekday"], status=SubscriberStatus(r["status"]),
        paused=bool(r["paused"]), id=r["id"], created_at=r["created_at"],
    )


def _row_to_delivery(r: _Row) -> Delivery:
    return Delivery(
        id=r["id"], issue_id=r["issue_id"], subscriber_id=r["subscriber_id"],
        status=DeliveryStatus(r["status"]), message_id=r["message_id"], attempts=r["attempts"],
        last_error=r["last_error"], next_attempt_at=r["next_attempt_at"], sent_at=r["sent_at"],
        in_doubt=bool(r["in_doubt"]),
    )
